"""`auto` means measured (tinyvision/probe.py): the faster candidate wins, a pinned setting is never
touched, the cache is keyed by machine, torch version and model, and result.json records it. The
candidates' speeds here come from a fake timer: no assertion depends on this machine's speed."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tinyvision import probe
from tinyvision.config import make_config
from tinyvision.models.source import resolve_model

CPU = torch.device("cpu")
DIGITS = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, classes=tuple("0123456789"))


@pytest.fixture()
def measured(monkeypatch: pytest.MonkeyPatch, tmp_path) -> dict[str, Any]:
    """The probe on, its cache in tmp_path, each candidate's step free but `costs` long on a fake clock."""
    monkeypatch.setenv("TINYVISION_PROBE", "1")
    monkeypatch.setenv("TINYVISION_CACHE", str(tmp_path / "cache"))
    state: dict[str, Any] = {"costs": {}, "current": None, "clock": 0.0, "steps": 0}

    def stepper(cfg, source, data, device, decision, setting, value):
        def step() -> None:
            state["current"], state["steps"] = (setting, str(value)), state["steps"] + 1
        return step

    def timer() -> float:  # read around each timed step: the clock moves on by the candidate's cost
        state["clock"] += state["costs"].get(state["current"], 1.0)
        return state["clock"]

    monkeypatch.setattr(probe, "_stepper", stepper)
    state["timer"] = timer
    return state


def decide(cfg: Any, state: dict[str, Any], **options: Any) -> probe.Decision:
    return probe.decide(cfg, resolve_model(cfg.model), DIGITS, CPU, timer=state["timer"], **options)


@pytest.mark.parametrize("slower,expected", [("bf16", "fp32"), ("fp32", "bf16")])
def test_the_faster_precision_is_chosen(measured, slower: str, expected: str) -> None:
    measured["costs"] = {("precision", slower): 3.0}
    decision = decide(make_config(model="digits-cnn"), measured)
    assert decision.precision == expected and "precision" in decision.measured
    assert decision.timings["precision"][slower] == pytest.approx(3000.0)  # milliseconds
    assert decision.timings["precision"][expected] == pytest.approx(1000.0)


def test_a_near_tie_keeps_the_default(measured) -> None:
    """bf16 2% faster is within the noise of a shared machine: fp32 (the default) stays."""
    measured["costs"] = {("precision", "bf16"): 0.98}
    assert decide(make_config(model="digits-cnn"), measured).precision == "fp32"
    measured["costs"] = {("precision", "bf16"): 0.9}
    assert decide(make_config(model="digits-cnn", batch_size=32), measured).precision == "bf16"


def test_threads_and_layout_are_measured_too_and_an_mlp_has_no_layout_to_choose(measured) -> None:
    measured["costs"] = {("threads", str(probe.cores())): 5.0, ("channels_last", "True"): 2.0}
    cnn = decide(make_config(model="digits-cnn"), measured)
    assert cnn.measured == ["threads", "precision", "channels_last"] and cnn.channels_last is False
    assert probe.cores() == 1 or cnn.threads != probe.cores()
    mlp = decide(make_config(model="digits-mlp"), measured)
    assert "channels_last" not in mlp.measured and mlp.notes["channels_last"].startswith("no convolution")


def test_a_pinned_setting_is_never_measured_nor_overridden(measured) -> None:
    measured["costs"] = {("precision", "fp32"): 9.0}  # bf16 would win, were precision auto
    decision = decide(make_config(model="digits-cnn", precision="fp32", threads=1, channels_last=False), measured)
    assert (decision.precision, decision.threads, decision.channels_last) == ("fp32", 1, False)
    assert decision.measured == [] and measured["steps"] == 0
    assert set(decision.notes) == {"precision", "threads", "channels_last"}


def test_a_pinned_setting_read_with_a_cached_choice_is_not_recorded_as_measured(measured) -> None:
    measured["costs"] = {("precision", "fp32"): 9.0}
    assert decide(make_config(model="digits-cnn"), measured).precision == "bf16"  # measured, then cached
    pinned = decide(make_config(model="digits-cnn", precision="fp32"), measured)  # the same cache entry
    assert pinned.cached and pinned.precision == "fp32"
    assert "precision" not in pinned.measured and "precision" not in pinned.timings
    assert pinned.notes["precision"] == "pinned by the config" and "threads" in pinned.measured


def test_the_cache_is_keyed_by_model_and_torch_version(measured, monkeypatch) -> None:
    cfg = make_config(model="digits-cnn")
    first = decide(cfg, measured)
    assert not first.cached and probe.cache_path().exists()
    steps = measured["steps"]
    again = decide(cfg, measured)
    assert again.cached and measured["steps"] == steps  # read, not measured
    assert (again.precision, again.threads, again.channels_last) == (first.precision, first.threads,
                                                                     first.channels_last)
    assert not decide(make_config(model="digits-cnn", batch_size=32), measured).cached  # another signature
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert not decide(cfg, measured).cached  # a new torch: measured again
    assert "torch 9.9.9" in probe.cache_key(cfg, DIGITS.input_shape, DIGITS.num_classes)
    assert probe.machine() in first.key


def test_off_in_tests_the_fixed_rule(monkeypatch) -> None:
    monkeypatch.setenv("TINYVISION_PROBE", "0")
    decision = probe.decide(make_config(model="digits-cnn"), resolve_model("digits-cnn"), DIGITS, CPU)
    assert (decision.precision, decision.channels_last, decision.measured) == ("fp32", None, [])  # layout: where built


def test_a_run_records_what_auto_chose(monkeypatch, tmp_path) -> None:
    """A real run with the probe on (real timings: only what was measured is asserted)."""
    import tinyvision as tv

    monkeypatch.setenv("TINYVISION_PROBE", "1")
    monkeypatch.setenv("TINYVISION_CACHE", str(tmp_path / "cache"))
    run = tv.train({"dataset": "digits", "model": "digits-cnn", "epochs": 1, "batch_size": 256}, out=tmp_path,
                   quiet=True)
    auto = run["auto"]
    assert auto["measured"] == ["threads", "precision", "channels_last"] and not auto["cached"]
    assert set(auto["timings_ms"]["precision"]) == {"fp32", "bf16"}
    assert run["precision"] == auto["precision"]
    again = tv.train({"dataset": "digits", "model": "digits-cnn", "epochs": 1, "batch_size": 256}, out=tmp_path,
                     quiet=True)
    assert again["auto"]["cached"] and again["precision"] == run["precision"]


def test_doctor_prints_the_machine_and_the_choices(monkeypatch, measured, capsys) -> None:
    from tinyvision.cli import main

    measured["costs"] = {("precision", "bf16"): 4.0}
    real = probe.decide
    monkeypatch.setattr(probe, "decide", lambda *a, **k: real(*a, **{**k, "timer": measured["timer"]}))
    assert main(["doctor", "--model", "digits-cnn", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("machine: cpu:") and "precision      fp32: 1000.00   bf16: 4000.00   -> fp32" in out, out


@pytest.mark.parametrize("population_cost,pays", [(2.0, True), (8.0, False)])
def test_a_population_is_chosen_only_where_it_pays(measured, population_cost: float, pays: bool) -> None:
    """Per run and step: alone 1.0, four stacked 2.0 (0.5 each: pays) or 8.0 (2.0 each: does not)."""
    measured["costs"] = {("population", "4"): population_cost}
    cfg = make_config(model="digits-mlp", batch_size=32 if pays else 48)
    assert probe.population_pays(cfg, (1, 8, 8, 10), CPU, False, timer=measured["timer"]) is pays
    steps = measured["steps"]
    assert probe.population_pays(cfg, (1, 8, 8, 10), CPU, False, timer=measured["timer"]) is pays  # cached
    assert measured["steps"] == steps


def test_without_the_probe_a_cnn_trains_alone_on_a_cpu(monkeypatch) -> None:
    monkeypatch.setenv("TINYVISION_PROBE", "0")
    assert probe.population_pays(make_config(model="digits-cnn"), (1, 8, 8, 10), CPU, True) is False
    assert probe.population_pays(make_config(model="digits-mlp"), (1, 8, 8, 10), CPU, False) is True
