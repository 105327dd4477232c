"""Exact setups (issue 13): classic PyTorch configurations expressed as they were written.

Spec forms against hand-built nn.Sequential models; input scaling saved with the model and applied
by predict; val_size=0 (the test set watched each epoch); last-epoch or best-epoch weights; an
epoch-0 evaluation; per-step curves (steps.csv); plain SGD by default; the shipped classic examples.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import tinyvision as tv
from tinyvision import runs
from tinyvision.files import load_state, load_weights
from tinyvision.config import load_config, make_config
from tinyvision.data import load_dataset
from tinyvision.errors import ConfigError, SpecError
from tinyvision.experiments import load_experiment, run_experiment
from tinyvision.inference import load_model, predict_files
from tinyvision.models import create_model
from tinyvision.models.build import count_spec_parameters
from tinyvision.optim import build_optimizer, build_scheduler

from test_resume import stop_after

EXAMPLES = Path(__file__).parents[1] / "examples"
DIGITS = dict(dataset="digits", threads=1, seed=3)


# -- 1. convolutions (or dense layers) without an activation -----------------------------------------

def _classic_cnn() -> nn.Sequential:
    """conv -> pool -> conv -> pool -> flatten -> Linear -> ReLU -> Linear: no conv nonlinearity."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(16, 64, 3, padding=1),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def _lenet_tanh_linear_convs() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(256, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))


def _deep_linear_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.Linear(100, 50), nn.Linear(50, 10))


def _cnn_linear_head() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 14 * 14, 32), nn.Linear(32, 10))


SPEC_FORMS = {
    "cnn:16-64/k3/fc128/conv-act:none": _classic_cnn,
    "cnn:6-16/k5/p0/fc120-84/tanh/conv-act:none": _lenet_tanh_linear_convs,
    "mlp:100-50/act:none": _deep_linear_mlp,
    "cnn:8/k3/fc32/fc-act:none": _cnn_linear_head,
}


@pytest.mark.parametrize("spec", SPEC_FORMS)
def test_spec_forms_match_hand_built_sequentials(spec: str) -> None:
    """Same parameter count, same layer kinds in the same order, and the same outputs once the
    hand-built model's weights are copied in (the pool-before-ReLU reordering aside: same values)."""
    reference = SPEC_FORMS[spec]()
    model = create_model(spec, (1, 28, 28), 10)
    ref_count = sum(p.numel() for p in reference.parameters())
    assert sum(p.numel() for p in model.parameters()) == ref_count
    assert count_spec_parameters(spec, (1, 28, 28), 10) == ref_count
    assert sorted(type(m).__name__ for m in model) == sorted(type(m).__name__ for m in reference)
    with torch.no_grad():
        for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
            mine.copy_(theirs)
        x = torch.randn(4, 1, 28, 28)
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    assert create_model(model.spec, (1, 28, 28), 10).spec == model.spec  # the canonical string round-trips


def test_activation_none_from_config_and_its_errors() -> None:
    cfg = make_config(model="lenet", conv_activation="none", fc_activation="tanh")
    model = create_model(cfg.model, (1, 28, 28), 10, **cfg.model_overrides())
    assert model.spec == "cnn:20-50/k5/p0/fc500/conv-act:none/fc-act:tanh"
    assert not any(isinstance(m, (nn.ReLU, nn.Tanh)) for m in list(model)[:model_index(model, "flatten")])
    with pytest.raises(SpecError, match="token 'conv-act:none': conv activation only applies to cnn specs"):
        create_model("mlp:10/conv-act:none", (1, 8, 8), 10)
    with pytest.raises(SpecError, match="unknown activation. Valid: relu, sigmoid, tanh, gelu, none"):
        create_model("cnn:8/fc-act:linear", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="'conv_activation'"):
        make_config(conv_activation="identity")


def model_index(model: nn.Sequential, name: str) -> int:
    return list(dict(model.named_children())).index(name)


# -- 2. input scaling ------------------------------------------------------------------------------

@pytest.mark.parametrize("normalize,mean,std", [
    ("none", 0.0, 1.0), ("unit", 0.0, 16.0), ({"mean": [0.25], "std": [0.5]}, 4.0, 8.0)])
def test_normalize_is_saved_with_the_model_and_predict_applies_it(tmp_path, normalize, mean, std) -> None:
    result = tv.train({**DIGITS, "model": "digits-mlp", "epochs": 2, "normalize": normalize},
                      run_dir=tmp_path / "run", quiet=True)
    tensors, meta = load_weights(tmp_path / "run" / runs.WEIGHTS)
    assert (meta["mean"], meta["std"]) == ([mean], [std])  # raw pixel units (Digits: 0..16)
    assert meta["normalize"] == normalize
    loaded = load_model(tmp_path / "run" / runs.WEIGHTS)
    image = load_dataset("digits").test.images[:1]  # (1, 1, 8, 8) in 0..16
    path = tmp_path / "digit.png"
    pixels = (image[0, 0].numpy() * 255 / 16).round().astype(np.uint8)  # an 8-bit file: 0..255
    Image.fromarray(pixels).save(path)
    [row] = predict_files(loaded, [path], top=10)
    net = create_model(result["spec"], (1, 8, 8), 10)
    net.load_state_dict(tensors)
    net.eval()
    x = torch.from_numpy(pixels.astype(np.float32) * 16 / 255).view(1, 1, 8, 8)  # back in Digits units
    with torch.no_grad():  # the scaling written by hand: (x - mean) / std in raw units
        expected = net((x - mean) / std).softmax(dim=1)[0]
    got = [(row["class"], row["probability"])] + [(row[f"class_{k}"], row[f"probability_{k}"]) for k in range(2, 11)]
    for cls, prob in got:
        assert prob == pytest.approx(float(expected[int(cls)]), abs=1e-5)


def test_normalize_statistics_must_fit_the_channels(tmp_path) -> None:
    with pytest.raises(ConfigError, match="normalize': mean has 3 values; the images have 1 channel"):
        tv.train({**DIGITS, "model": "digits-mlp", "epochs": 1,
                  "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5]}}, out=tmp_path, quiet=True)
    assert load_config(None, ["normalize={mean: [0.1307], std: [0.3081]}"]).normalize.std == (0.3081,)
    with pytest.raises(ConfigError, match="normalize': std: every std must be > 0"):
        make_config(normalize={"mean": [0.5], "std": [0.0]})
    with pytest.raises(ConfigError, match="normalize': must be one of dataset, none, unit"):
        make_config(normalize="minmax")


# -- 3, 4. the test set as validation; last or best weights -----------------------------------------

def _val_losses(run_dir: Path) -> list[float]:
    return [row["val_loss"] for row in runs.read_metrics(run_dir) if row["epoch"] >= 1]


def test_val_size_zero_trains_on_every_image_and_watches_the_test_set(tmp_path) -> None:
    cfg = {**DIGITS, "model": "digits-mlp", "epochs": 3, "val_size": 0, "batch_size": 1350}
    result = tv.train(cfg, run_dir=tmp_path / "run", quiet=True)
    header = (tmp_path / "run" / runs.METRICS).read_text().splitlines()[0].split(",")
    assert "test_loss" in header and "val_loss" not in header
    assert result["validation"] == "test (used as validation)"
    assert result["warnings"] == []  # nothing is chosen on the test set: restore_best defaults to false
    assert result["evaluated_weights"] == "last epoch 3"
    # one step per epoch at batch 1350: every training image (1,797 - 447 test) is in the one batch
    assert load_state(tmp_path / "run" / runs.CHECKPOINT)["entries"][0]["optimizer"]["state"][0]["step"] == 3
    # the per-epoch "validation" is the test set: the last row is exactly the final test result
    assert _val_losses(tmp_path / "run")[-1] == result["test"]["loss"]


def test_restore_best_picks_the_weights_that_are_evaluated(tmp_path, caplog) -> None:
    cfg = {**DIGITS, "model": "digits-mlp", "epochs": 6, "val_size": 0, "lr": 0.3, "optimizer": "sgd",
           "momentum": 0.9}  # a rate high enough that the loss jumps around
    last = tv.train({**cfg, "restore_best": False}, run_dir=tmp_path / "last", quiet=True)
    best = tv.train({**cfg, "restore_best": True}, run_dir=tmp_path / "best", quiet=True)
    losses = _val_losses(tmp_path / "last")
    assert losses == _val_losses(tmp_path / "best")  # the same training either way
    assert last["test"]["loss"] == losses[-1]
    assert best["test"]["loss"] == min(losses) and best["best_epoch"] == 1 + losses.index(min(losses))
    assert best["evaluated_weights"] == f"best epoch {best['best_epoch']} (lowest validation loss)"
    assert best["warnings"] and "the test score is optimistic" in best["warnings"][0]
    assert any("the test score is optimistic" in r.message for r in caplog.records)


def test_restore_best_false_saves_the_last_epochs_weights(tmp_path) -> None:
    cfg = {**DIGITS, "model": "digits-mlp", "epochs": 4, "val_size": 300, "restore_best": False}
    result = tv.train(cfg, run_dir=tmp_path / "run", quiet=True)
    saved = load_weights(tmp_path / "run" / runs.WEIGHTS)[0]
    last = load_state(tmp_path / "run" / runs.CHECKPOINT)["entries"][0]["model"]  # the checkpoint after epoch 4
    assert all(torch.equal(saved[k], last[k]) for k in last)
    assert result["evaluated_weights"] == "last epoch 4"


def test_patience_is_epochs_without_a_lower_validation_loss(tmp_path) -> None:
    cfg = {**DIGITS, "model": "digits-mlp", "epochs": 60, "patience": 3, "min_delta": 0.01}
    result = tv.train(cfg, run_dir=tmp_path / "run", quiet=True)
    losses = _val_losses(tmp_path / "run")
    best, bad = math.inf, 0
    for epoch, loss in enumerate(losses, 1):  # the documented rule, written out
        best, bad = (loss, 0) if loss < best - 0.01 else (best, bad + 1)
        if bad == 3:
            break
    assert result["stopped_early"] and result["epochs_run"] == epoch == len(losses) < 60


# -- 5. before training ----------------------------------------------------------------------------

def test_eval_before_adds_epoch_zero_without_changing_training(tmp_path) -> None:
    cfg = {**DIGITS, "model": "cnn:8/k3/fc16/drop0.2", "epochs": 2, "augment": "translate"}
    plain = tv.train(cfg, run_dir=tmp_path / "plain", quiet=True)
    before = tv.train({**cfg, "eval_before": True}, run_dir=tmp_path / "before", quiet=True)
    rows = runs.read_metrics(tmp_path / "before")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[0]["val_loss"] == pytest.approx(math.log(10), abs=0.3)  # near chance before a step
    assert rows[0]["train_accuracy"] == pytest.approx(0.1, abs=0.08) and rows[0]["best_epoch"] == 0
    a, b = (load_weights(tmp_path / name / runs.WEIGHTS)[0] for name in ("plain", "before"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the evaluation drew no random numbers
    same = {k: v for k, v in before["test"].items() if k != "seconds"}
    assert same == {k: v for k, v in plain["test"].items() if k != "seconds"} and before["epochs_run"] == 2


# -- 6. per-step curves ----------------------------------------------------------------------------

def test_steps_csv_has_a_row_every_n_steps(tmp_path) -> None:
    cfg = {**DIGITS, "model": "digits-mlp", "epochs": 3, "batch_size": 100, "val_size": 297,
           "log_every": 4, "schedule": "onecycle"}  # 1,050 images: 11 steps per epoch, 33 in all
    tv.train(cfg, run_dir=tmp_path / "run", quiet=True)
    with (tmp_path / "run" / runs.STEPS).open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(4, 34, 4))  # 8 rows
    assert [int(r["epoch"]) for r in rows] == [1, 1, 2, 2, 2, 3, 3, 3]
    assert [int(r["batches"]) for r in rows] == [4, 4, 1, 4, 4, 2, 4, 4]  # a window restarts each epoch
    assert len({float(r["lr"]) for r in rows}) == 8  # one-cycle moves the rate every step
    assert all(0 < float(r["train_loss"]) < 3 and 0 <= float(r["train_accuracy"]) <= 1 for r in rows)


def test_steps_csv_survives_a_stop_and_resume_bit_for_bit(tmp_path, monkeypatch) -> None:
    cfg = {**DIGITS, "model": "digits-mlp", "epochs": 2, "batch_size": 100, "val_size": 297, "log_every": 3}
    tv.train(cfg, run_dir=tmp_path / "whole", quiet=True)
    with monkeypatch.context() as patch:
        stop_after(patch, 11 + 1 + 5)  # step 5 of epoch 2, in the middle of a window
        assert tv.train(cfg, run_dir=tmp_path / "resumed", quiet=True)["status"] == "interrupted"
    tv.train(cfg, run_dir=tmp_path / "resumed", quiet=True, resume=True)
    assert (tmp_path / "resumed" / runs.STEPS).read_text() == (tmp_path / "whole" / runs.STEPS).read_text()


@pytest.mark.slow
def test_report_draws_step_curves_with_a_band_over_seeds(tmp_path) -> None:
    from tinyvision.report import write_report

    exp = load_experiment(EXAMPLES / "classic-digits-adamax.yaml", repeats=2,
                          overrides=["epochs=2", "log_every=5", "patience=null"])
    run_experiment(exp, tmp_path / "exp", quiet=True)
    write_report(tmp_path / "exp")
    markdown = (tmp_path / "exp" / "report.md").read_text()
    assert "![step curves](plots/step_curves.png)" in markdown and "±1 std band" in markdown


# -- 7. the defaults a PyTorch user expects -----------------------------------------------------------

def test_sgd_is_plain_sgd_unless_momentum_is_given() -> None:
    net = create_model("mlp:8", (1, 8, 8), 10)
    cfg = make_config(dataset="digits", optimizer="sgd", schedule="onecycle", epochs=1)
    optimizer = build_optimizer(net, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["momentum"] == 0  # one-cycle does not slip a momentum in
    assert build_optimizer(net, make_config(optimizer="sgd", momentum=0.9)).param_groups[0]["momentum"] == 0.9


# -- 8. the shipped classic setups -------------------------------------------------------------------

CLASSICS = sorted(EXAMPLES.glob("classic-*.yaml"))
SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "svhn": (3, 32, 32), "svhn+extra": (3, 32, 32)}
_ADAM = {"optimizer": "adam", "lr": 1e-3, "val_size": 0, "restore_best": False, "precision": "fp32"}

# What each classic file must pin (the original's values, as docs/reproduce.md lists them) and the
# parameter count of each of its points, counted by hand from the PyTorch code in the file's header.
PINNED = {
    "classic-digits-adamax": (
        {"dataset": "digits", "normalize": "none", "optimizer": "adamax", "lr": 1e-3, "weight_decay": 1e-5,
         "batch_size": 64, "patience": 20, "restore_best": True, "eval_before": True, "precision": "fp32"},
        # 64*128+128 + 128*64+64 + 64*64+64 + 64*32+32 + 32*10+10 = 23,146
        # conv 16*9+16 = 160, 64*16*9+64 = 9,280; 8 -> 4 -> 2: 256 -> 128: 32,896; 128*10+10 = 1,290
        [23_146, 160 + 9_280 + 32_896 + 1_290]),
    "classic-lenet-sgd": (
        {"dataset": "mnist", "model": "lenet", "optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "batch_size": 64,
         "epochs": 10, "val_size": 0, "restore_best": False, "eval_before": True, "precision": "fp32"},
        # conv 20*25+20 = 520, 50*20*25+50 = 25,050; 28 -> 24 -> 12 -> 8 -> 4: 800*500+500 = 400,500; 5,010
        [520 + 25_050 + 400_500 + 5_010]),
    "classic-tiny-cnn-adam-lr": (
        {"dataset": "mnist", "model": "cnn-tiny", "normalize": "unit", "optimizer": "adam", "batch_size": 2048,
         "val_size": 0, "eval_before": True, "log_every": 1, "precision": "fp32"},
        [160 + 580 + 1_970] * 7),  # conv 16*9+16, 4*16*9+4; 4*7*7 = 196 -> 10: 1,970
    "classic-mnist-mlp-cnn": (
        {"dataset": "mnist", "normalize": "unit", **_ADAM, "weight_decay": 5e-3, "batch_size": 100, "epochs": 10},
        # MLP 784*456+456 = 357,960; 456*128+128 = 58,496; 1,290. CNN k5: 208 + 3,216; 16*7*7*128+128 = 100,480
        [357_960 + 58_496 + 1_290, 208 + 3_216 + 100_480 + 1_290, 80 + 1_168 + 100_480 + 1_290,
         417_746, 105_194, 357_960 + 4_570, 417_746 + 16_512, 208 + 8 * 14 * 14 * 128 + 128 + 1_290,
         208 + 3_216 + 12_832 + 32 * 3 * 3 * 128 + 128 + 1_290, 417_746, 105_194]),
    "classic-svhn": (
        {"normalize": "unit", **_ADAM, "batch_size": 128, "epochs": 10},
        # conv 448 + 4,640 + 18,496; 64*4*4 = 1,024 -> 256: 262,400; 256*64+64 = 16,448; 650
        [448 + 4_640 + 18_496 + 262_400 + 16_448 + 650] * 2),
}


def test_every_classic_file_is_pinned_here() -> None:
    assert {p.stem for p in CLASSICS} == set(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_classic_files_pin_the_originals_values_and_parameter_counts(name: str) -> None:
    pinned, counts = PINNED[name]
    exp = load_experiment(EXAMPLES / f"{name}.yaml")
    assert exp.spec.repeats == 5  # docs/reproduce.md: mean and 95% CI over 5 seeds
    configs = [exp.base.model_copy(update=point.values) for point in exp.points]
    for cfg in configs:
        for field, value in pinned.items():
            assert getattr(cfg, field) == (make_config(normalize=value).normalize if field == "normalize" else value), \
                (name, field)
    assert [count_spec_parameters(cfg.model if ":" in cfg.model else create_model(cfg.model, SHAPES[cfg.dataset], 10).spec,
                                  SHAPES[cfg.dataset], 10) for cfg in configs] == counts
    if name == "classic-tiny-cnn-adam-lr":
        assert [cfg.lr for cfg in configs] == [10.0 ** e for e in range(-6, 1)]  # 1e-6 to 1 by decades
    if name == "classic-mnist-mlp-cnn":
        assert [cfg.loss for cfg in configs].count("mse") == 2
    if name == "classic-svhn":
        assert [cfg.dataset for cfg in configs] == ["svhn", "svhn+extra"]


@pytest.mark.parametrize("path", CLASSICS, ids=[p.stem for p in CLASSICS])
@pytest.mark.slow
def test_classic_examples_run_on_a_subset(path: Path, tmp_path, shared_data, monkeypatch) -> None:
    from test_datasets import with_real_md5s, write_svhn_files

    data_dir = shared_data
    if "svhn" in path.stem:  # not available here: small files in exactly the real format
        data_dir = tmp_path / "data"
        write_svhn_files(data_dir / "svhn", {"train": 300, "extra": 200, "test": 100})
        for name in ("svhn", "svhn+extra"):
            with_real_md5s(monkeypatch, name, data_dir / "svhn")
    exp = load_experiment(path, repeats=1, overrides=["epochs=2", "train_subset=600", f"data_dir={data_dir}"])
    _, rows, _ = run_experiment(exp, tmp_path / exp.spec.name, quiet=True)
    assert all(r["completed"] == 1 for r in rows) and len(rows) == len(exp.points)
    assert all(0.0 <= r["test_accuracy_mean"] <= 1.0 for r in rows), rows
    for metrics_file in (tmp_path / exp.spec.name).rglob(runs.METRICS):  # each run is learning
        config = runs.read_config(metrics_file.parent)
        if "svhn" in path.stem or not 1e-4 <= config.lr <= 1e-2:
            continue  # the sweep's ends barely move (or diverge) by design; traced pixels are no task
        losses = [row["val_loss"] for row in runs.read_metrics(metrics_file.parent)]
        assert losses[-1] < losses[0], (metrics_file, losses)
    run_dir = next((tmp_path / exp.spec.name).rglob(runs.RESULT)).parent
    config = runs.read_config(run_dir)
    assert config.model_dump() == {**exp.base.model_dump(), **config.model_dump(include=set(exp.axes) | {"seed"})}


def test_evaluating_the_missing_validation_split_is_one_line(tmp_path, capsys) -> None:
    from tinyvision.cli import main

    tv.train({**DIGITS, "model": "digits-mlp", "epochs": 1, "val_size": 0}, run_dir=tmp_path / "run", quiet=True)
    assert main(["evaluate", str(tmp_path / "run"), "--split", "val"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "val split has no images (val_size=0" in err


def test_the_report_counts_trained_epochs_not_the_epoch_zero_row(tmp_path) -> None:
    from tinyvision.report import read_experiment
    from tinyvision.report.tables import runs_table

    tv.run({"name": "eb", "base": {**DIGITS, "model": "mlp:16", "epochs": 2, "eval_before": True}, "repeats": 1},
           exp_dir=tmp_path / "eb", quiet=True)
    [row] = runs_table(read_experiment(tmp_path / "eb")).rows
    assert row["epochs"] == 2
