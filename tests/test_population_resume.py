"""Populations stopped and continued: a checkpoint taken at any step (mid-epoch, after an epoch, with
members already stopped early or diverged) continues to exactly the weights, metrics and outcomes
of the population trained without a stop; and `tinyvision run --population N` killed with SIGKILL
at random moments, then run again, finishes every member bit-identical to an uninterrupted run.
"""
from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tinyvision import rundir, runs
from tinyvision.checkpoint import restore_checkpoint, save_checkpoint
from tinyvision.config import make_config
from tinyvision.data import load_data
from tinyvision.pipeline import prepare
from tinyvision.stopping import StopRequest
from tinyvision.training.loop import train

from test_reliability import WALL_CLOCK, assert_same_run, run_cli, start_cli, temp_files

BASE = {"dataset": "digits", "precision": "fp32", "threads": 1, "epochs": 4}
NEVER_BETTER = {"min_delta": 100.0}  # epoch 1 improves on inf, no later epoch can: stops after `patience`
MEMBERS = [{"seed": 0, "lr": 0.05, "patience": 1, **NEVER_BETTER},  # stops after epoch 2
           {"seed": 1, "lr": 0.01},
           {"seed": 2, "lr": 10.0},  # diverges in epoch 1
           {"seed": 3, "lr": 0.02, "patience": 2, **NEVER_BETTER, "restore_best": False}]  # stops after 3
CASES = {  # member 2 diverges where nothing damps lr 10 (Adam steps are ~lr; batch norm rescales)
    "mlp-adam-exponential": {"model": "digits-mlp", "optimizer": "adam", "schedule": "exponential", "gamma": 0.7},
    "cnn-sgd-onecycle-augment": {"model": "cnn:8-16/k3/fc32", "optimizer": "sgd", "momentum": 0.9,
                                 "schedule": "onecycle", "augment": "translate"},
    "cnn-bn-sgd": {"model": "cnn:8-16/k3/fc32/bn", "optimizer": "sgd", "momentum": 0.9}}


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_data(make_config(BASE))


def configs(case: str) -> list:
    scale = 1.0 if CASES[case]["optimizer"] == "sgd" else 0.1
    return [make_config({**BASE, **CASES[case], **m, "lr": m["lr"] * scale}) for m in MEMBERS]


class StopAt(StopRequest):
    """A stop request made at the given poll (the loop polls after every step and at epoch ends)."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.left = polls

    @property
    def requested(self) -> bool:
        self.left -= 1
        return self.left <= 0


def build(cfgs: list, data: Any) -> Any:
    return prepare(cfgs, data=data)[0]


def fit(trainee: Any, stop: Any = None) -> Any:
    for _ in train(trainee, stop):
        pass
    return trainee


def trained(pop: Any) -> list[tuple]:
    """Each member's outcome, counters, metrics (wall clock dropped) and final weights."""
    out = []
    for m in pop.members:
        rows = [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in m.history]
        out.append((m.outcome, m.epoch, m.best_epoch, m.stopped_early, rows, m.final_state))
    return out


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (a diverged member's NaNs included)."""
    return a.dtype == b.dtype and a.shape == b.shape and \
        torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def assert_same(mine: list[tuple], reference: list[tuple]) -> None:
    for k, (a, b) in enumerate(zip(mine, reference, strict=True)):
        assert a[:5] == b[:5], f"member {k}"
        assert a[5].keys() == b[5].keys() and all(same_bits(a[5][n], b[5][n]) for n in b[5]), f"member {k}"


@pytest.mark.parametrize("case", CASES)
def test_a_population_stopped_anywhere_continues_bit_identically(case: str, tmp_path: Path, digits) -> None:
    """Stops mid-epoch 1 (before the divergence), mid-epoch 3 (members stopped and diverged by then)
    and between epochs; each continued from its checkpoint in a freshly built population."""
    cfgs = configs(case)
    names = [f"run{k}" for k in range(len(cfgs))]
    reference = fit(build(cfgs, digits))
    expected = trained(reference)
    diverges = "diverged" if case == "cnn-sgd-onecycle-augment" else "completed"
    assert [o.status for o, *_ in expected] == ["completed", "completed", diverges, "completed"]
    assert [m.epoch for m in reference.members][:2] == [2, 4] and reference.members[3].epoch == 3
    steps = reference.steps_per_epoch()
    for polls in (3, 2 * (steps + 1) + 5, steps + 1):  # step 3; mid epoch 3; between epochs 1 and 2
        path = tmp_path / f"stop{polls}.safetensors"
        pop = fit(build(cfgs, digits), StopAt(polls))
        assert "interrupted" in [m.outcome.status for m in pop.members]
        save_checkpoint(path, pop, names)
        resumed = build(cfgs, digits)
        restore_checkpoint(path, resumed, names)
        assert (resumed.epoch, resumed.step) == (pop.epoch, pop.step)
        assert_same(trained(fit(resumed)), expected)


def test_a_checkpoint_of_other_members_is_refused(tmp_path: Path, digits) -> None:
    from tinyvision.errors import DataError

    cfgs = configs("cnn-bn-sgd")[:2]
    save_checkpoint(tmp_path / "p.safetensors", build(cfgs, digits), ["a", "b"])
    with pytest.raises(DataError, match="written for members"):
        restore_checkpoint(tmp_path / "p.safetensors", build(cfgs, digits), ["a", "c"])
    with pytest.raises(DataError, match="another training order .seed 0, now 1"):
        restore_checkpoint(tmp_path / "p.safetensors", build([cfgs[1], cfgs[0]], digits), ["a", "b"])
    with pytest.raises(DataError, match="holds 2 runs"):
        restore_checkpoint(tmp_path / "p.safetensors", build(cfgs[:1], digits), ["a"])


# --- the command line, killed ------------------------------------------------------------------

EXPERIMENT = {"name": "kill", "base": {**BASE, "model": "mlp:1024-1024", "epochs": 8, "batch_size": 32,
                                       "optimizer": "adam", "schedule": "onecycle", "augment": "translate"},
              "grid": {"lr": [0.003, 0.001]}, "repeats": 2}  # 4 runs: one population of 3, then one of 1
RUN = ["--population", "3", "--quiet", "--no-report"]


def member_dirs(exp_dir: Path) -> list[Path]:
    return sorted((exp_dir / "runs").glob("*/seed*"))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_run_again_is_bit_identical(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    reference = start_cli(tmp_path, "run", "exp.yaml", "--exp-dir", "ref", *RUN, log="ref")
    rng, kills, sigterms, populations_resumed = random.Random(7), 0, 0, 0
    while True:
        killing = kills < 6
        how = "sigterm" if killing and kills == 3 and not sigterms else "sigkill"
        proc = start_cli(tmp_path, "run", "exp.yaml", "--exp-dir", "killed", *RUN, log="killed")
        if killing:
            deadline = time.monotonic() + rng.uniform(3.0, 9.0)
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        rc = proc.wait(timeout=600)
        if rc == 0:  # finished (on its own, or the signal came after its last step)
            break
        if how == "sigterm":
            assert rc == 130, (tmp_path / "killed.err").read_text()[-2000:]
            sigterms += 1
        else:
            assert rc == -signal.SIGKILL, rc
        kills += 1
        populations_resumed += any(rundir.inspect_run(d).population_checkpoint for d in member_dirs(tmp_path / "killed"))
    assert reference.wait(timeout=600) == 0, (tmp_path / "ref.err").read_text()[-2000:]
    mine, theirs = member_dirs(tmp_path / "killed"), member_dirs(tmp_path / "ref")
    assert [d.relative_to(tmp_path / "killed") for d in mine] == [d.relative_to(tmp_path / "ref") for d in theirs]
    assert len(mine) == 4
    for run_dir, ref_dir in zip(mine, theirs):
        assert_same_run(run_dir, ref_dir)
        assert not temp_files(run_dir) and not rundir.inspect_run(run_dir).population_checkpoint
    members = sorted(runs.read_result(d)["population"]["member"] for d in mine if runs.read_result(d).get("population"))
    assert members == [0, 1, 2]
    print(f"\npopulation kill test: {kills} kills ({sigterms} SIGTERM), {populations_resumed} left a population "
          "checkpoint to continue; 4 runs bit-identical to the uninterrupted experiment")
    assert kills >= 3 and populations_resumed >= 2
    assert run_cli(tmp_path, "report", "killed").returncode == 0


def test_a_stopped_population_continues_as_it_was_grouped(tmp_path: Path) -> None:
    """Stopped by a signal, then run again with another --population: the checkpointed population
    keeps its members (it continues; nothing is retrained from scratch)."""
    from tinyvision import rundir
    from tinyvision.experiments import build_experiment
    from tinyvision.experiments.groups import plan, run_group
    from tinyvision.experiments.runner import prepare_dir

    spec = {"name": "g", "base": {**BASE, "model": "digits-mlp", "epochs": 2}, "repeats": 4}
    jobs = prepare_dir(build_experiment(spec), tmp_path / "e")
    assert plan(jobs, range(4), None) == [[0, 1, 2, 3]]
    results = run_group(jobs, stop=StopAt(5))  # a stop request at the 5th step
    assert [r["status"] for r in results] == ["interrupted"] * 4
    assert rundir.inspect_run(jobs[0].run_dir).population_checkpoint
    assert plan(jobs, range(4), 2) == [[0, 1, 2, 3]] and plan(jobs, range(4), None, workers=2) == [[0, 1, 2, 3]]
    assert plan(jobs, range(4), 1) == [[0], [1], [2], [3]]  # one at a time, as asked: they start over
    results = run_group(jobs)
    assert [r["status"] for r in results] == ["completed"] * 4
    assert not rundir.inspect_run(jobs[0].run_dir).population_checkpoint
    assert [len(runs.read_metrics(job.run_dir)) for job in jobs] == [2] * 4


def test_runs_with_dropout_train_together_and_compiled_ones_alone() -> None:
    from tinyvision.training.plan import plan_groups

    cfgs = [make_config({**BASE, "model": "mlp:32/drop0.5", "seed": s}) for s in range(3)]
    assert plan_groups(cfgs, None) == plan_groups(cfgs, 3) == [[0, 1, 2]]  # each member its own masks
    compiled = [c.model_copy(update={"compile": True}) for c in cfgs]
    assert plan_groups(compiled, 3) == [[0], [1], [2]]
