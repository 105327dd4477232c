"""Populations (K runs stacked through torch.func) against the single runs they stand for: member k
must match run k trained alone (pipeline.prepare of one config, the same loop) within fp32
tolerance: weights, metrics rows, best epochs, early stopping and divergence per member.

Tolerances (measured on this project's 2-core CPU, fp32, one thread): vmap maps the same module
code over the members, so the arithmetic is the single run's up to the order of sums in the
batched matmuls and convolutions: gradients agree to ~1e-7 relative, an MLP's weights after one
epoch of Digits (16 steps) to 4e-7 and its metrics to 1e-7, a CNN's weights to 1e-5. Where a
parameter's true gradient is zero (a convolution's bias before batch norm) the update follows
rounding noise (Adam moves it by lr * sign(noise)), so batch-norm models are compared on their
metrics. An accuracy counts images, so a logit on the edge may put one on the other side. Over several epochs differences grow
chaotically: the later bounds are 10x what was measured, far below what a wrong learning rate,
seed, data order or weight decay gives (1e-2 and more in one epoch).
"""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from tinyvision.config import make_config
from tinyvision.data import load_data
from tinyvision.pipeline import prepare
from tinyvision.training.loop import train
from tinyvision.training.plan import check_members

ONE_EPOCH = (1e-4, 1e-5)  # weights (absolute), metrics: losses, accuracies, lr (relative)
LATER = (2e-2, 5e-3)  # after 4 epochs
BATCH_NORM = (None, 2e-3)  # metrics only (see the module docstring)
METRIC_COLUMNS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
ACCURACY_TOLERANCE = 2.5e-3  # two images of Digits' 1,000 (train) or 350 (validation) change sides at most
BASE = {"dataset": "digits", "precision": "fp32", "epochs": 1, "threads": 1}  # one thread: steady on a shared machine
MLP, CNN = "digits-mlp", "cnn:16-64/k3/fc256-128"  # a plain CNN: the digits-cnn preset has dropout
NEVER_BETTER = {"min_delta": 100.0}  # epoch 1 improves on inf, no later epoch can: stops after `patience`


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_data(make_config(BASE))


def configs(base: dict, members: list[dict]) -> list:
    return [make_config({**BASE, **base, **m}) for m in members]


def trained(cfgs: list, data: Any, model: Any = None) -> Any:
    """The trainee after the loop (one run: its own module; several: stacked)."""
    trainee, _ = prepare(cfgs, model=model, data=data)
    for _ in train(trainee):
        pass
    return trainee


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def assert_matches_single_runs(cfgs: list, data: Any, tolerances: tuple, model: Any = None) -> list:
    """Train the population and each run alone; compare member by member. Returns the outcomes."""
    weights_tol, metrics_tol = tolerances
    pop = trained(cfgs, data, model)
    assert len(cfgs) == 1 or type(pop).__name__ == "StackedModules"
    for k, cfg in enumerate(cfgs):
        alone = trained([cfg], data, model)
        mine, theirs = pop.members[k], alone.members[0]
        assert (mine.outcome.status, mine.stopped_early, mine.best_epoch, mine.epoch) == \
            (theirs.outcome.status, theirs.stopped_early, theirs.best_epoch, theirs.epoch), f"member {k}"
        assert len(mine.history) == len(theirs.history), f"member {k}"
        for a, b in zip(mine.history, theirs.history):
            assert a["epoch"] == b["epoch"] and a["best_epoch"] == b["best_epoch"]
            for column in METRIC_COLUMNS:  # an accuracy is a count: a logit on the edge may flip one image
                near = {"abs": ACCURACY_TOLERANCE} if column.endswith("accuracy") else {"rel": metrics_tol}
                assert a[column] == pytest.approx(b[column], **near), (k, a["epoch"], column)
        if mine.outcome.status == "diverged":
            assert mine.outcome.reason.split(" at ")[1].split(",")[0] == theirs.outcome.reason.split(" at ")[1].split(",")[0]
        elif weights_tol is not None:
            assert max_difference(pop.member_state(k), alone.member_state(0)) < weights_tol, f"member {k}"
    return [m.outcome for m in pop.members]


@pytest.mark.parametrize("model,extra", [(MLP, {}), (CNN, {}), (CNN, {"batch_norm": True}),
                                         ("mlp:32/bn/drop0.2", {"init": "kaiming"})])
def test_members_start_bit_exactly_where_their_single_runs_start(model: str, extra: dict, digits) -> None:
    cfgs = configs({"model": model, **extra}, [{"seed": 3}, {"seed": 0, "init": "xavier"}, {"seed": 7}])
    pop, _ = prepare(cfgs, data=digits)
    for k, cfg in enumerate(cfgs):
        start = prepare([cfg], data=digits)[0].snapshot(0)
        mine = pop.snapshot(k)
        assert mine.keys() == start.keys()
        assert all(torch.equal(mine[name], start[name]) for name in start), f"member {k}"


SGD = {"optimizer": "sgd", "momentum": 0.9}
ADAM = {"optimizer": "adam"}
SGD_MEMBERS = [{"seed": 0, "lr": 0.05}, {"seed": 1, "lr": 0.01}, {"seed": 2, "lr": 0.1, "weight_decay": 1e-3}]
ADAM_MEMBERS = [{"seed": 0, "lr": 1e-3}, {"seed": 1, "lr": 3e-3}, {"seed": 2, "lr": 2e-3, "weight_decay": 1e-3}]


@pytest.mark.parametrize("model,optimizer,members", [
    (MLP, SGD, SGD_MEMBERS), (MLP, ADAM, ADAM_MEMBERS), (MLP, {"optimizer": "adamw"}, ADAM_MEMBERS),
    (MLP, {"optimizer": "adamax"}, ADAM_MEMBERS), (MLP, {"optimizer": "adadelta"}, [{"seed": 0, "lr": 1.0},
                                                                                 {"seed": 1, "lr": 0.5}]),
    (CNN, SGD, SGD_MEMBERS), (CNN, ADAM, ADAM_MEMBERS), (CNN, {"optimizer": "adamw"}, ADAM_MEMBERS),
], ids=["mlp-sgd", "mlp-adam", "mlp-adamw", "mlp-adamax", "mlp-adadelta", "cnn-sgd", "cnn-adam", "cnn-adamw"])
def test_one_epoch_matches_single_runs(model: str, optimizer: dict, members: list, digits) -> None:
    # Adadelta's steps are ~sqrt(eps) whatever the gradient's size: a ReLU that a rounding flips
    # moves its unit by that much (measured: 3e-8 after 3 steps, 1.5e-3 after 16)
    tolerances = LATER if optimizer["optimizer"] == "adadelta" else ONE_EPOCH
    assert_matches_single_runs(configs({"model": model, **optimizer}, members), digits, tolerances)


@pytest.mark.parametrize("model", [MLP, CNN])
def test_members_with_one_seed_share_the_batch(model: str, digits) -> None:
    cfgs = configs({"model": model, **ADAM}, [{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 2e-3, "label_smoothing": 0.1}])
    assert prepare(cfgs, data=digits)[0].member_batches.shared
    # a CNN at Adam lr 3e-3 follows one rounding difference chaotically within the epoch (measured 4e-3)
    assert_matches_single_runs(cfgs, digits, ONE_EPOCH if model == MLP else LATER)


@pytest.mark.parametrize("model", [MLP, CNN])
@pytest.mark.parametrize("augment", ["none", "translate"])
def test_members_in_blocks_of_one_seed_share_their_block_batch(model: str, augment: str, digits) -> None:
    members = [{"seed": 4, "lr": 1e-3}, {"seed": 4, "lr": 3e-3}, {"seed": 1, "lr": 2e-3}, {"seed": 1, "lr": 5e-4}]
    cfgs = configs({"model": model, **ADAM, "augment": augment, "translate": 1}, members)
    assert prepare(cfgs, data=digits)[0].member_batches.sizes == [2, 2]
    assert_matches_single_runs(cfgs, digits, ONE_EPOCH)


def test_seed_blocks() -> None:
    from tinyvision.training.batches import seed_blocks

    assert seed_blocks([0, 0, 1, 1]) == [2, 2] and seed_blocks([0, 1, 2]) is None
    assert seed_blocks([0, 0, 1, 1, 1]) is None  # blocks of unequal size: a batch per member
    assert seed_blocks([0, 1, 0]) is None  # seed 0 in two blocks


@pytest.mark.parametrize("base,tolerances", [
    ({"model": MLP, "augment": "translate", "translate": 1, "label_smoothing": 0.1}, ONE_EPOCH),  # augmentation
    ({"model": CNN, "batch_norm": True, "optimizer": "sgd", "momentum": 0.9}, BATCH_NORM),  # per-member statistics
    ({"model": "mlp:64/bn", "schedule": "onecycle", "optimizer": "sgd", "momentum": 0.9}, BATCH_NORM),  # cycles momentum
    ({"model": MLP, "schedule": "exponential", "gamma": 0.5, "epochs": 2, "eval_before": True}, ONE_EPOCH),
    ({"model": MLP, "loss": "mse", "lr": 0.01, "log_every": 5}, ONE_EPOCH),  # another loss; steps.csv rows
], ids=["augment", "cnn-bn", "onecycle", "exponential", "mse-steps"])
def test_data_order_augmentation_schedules_and_batch_norm_per_member(base: dict, tolerances: tuple, digits) -> None:
    members = [{"seed": 0, "lr": 0.003}, {"seed": 1, "lr": 0.001, "label_smoothing": 0.0}, {"seed": 2, "lr": 0.02}]
    assert_matches_single_runs(configs({"optimizer": "adam", **base}, members), digits, tolerances)


def test_steps_csv_rows_per_member(digits) -> None:
    cfgs = configs({"model": MLP, "log_every": 4}, [{"seed": 0}, {"seed": 1, "lr": 3e-3}])
    pop = trained(cfgs, digits)
    for k, cfg in enumerate(cfgs):
        alone = trained([cfg], digits).members[0].steps
        assert [r["step"] for r in pop.members[k].steps] == [r["step"] for r in alone] == [4, 8, 12, 16]
        assert [r["train_loss"] for r in pop.members[k].steps] == pytest.approx([r["train_loss"] for r in alone],
                                                                               rel=1e-5)


EARLY = [{"seed": 0, "lr": 0.05, "patience": 1, **NEVER_BETTER},  # stops after epoch 2
         {"seed": 1, "lr": 0.01, "patience": 2, **NEVER_BETTER, "restore_best": False},  # after 3, keeps epoch 3's
         {"seed": 3, "lr": 0.02}]  # all 4 epochs
DIVERGES = {"seed": 2, "lr": 10.0}  # SGD at lr 10, momentum 0.9: NaN within the first epoch (measured: step 6-10)


@pytest.mark.parametrize("model", [MLP, CNN])
def test_members_stop_early_at_different_epochs_and_one_diverges(model: str, digits) -> None:
    members = [*EARLY[:2], DIVERGES, EARLY[2]]
    outcomes = assert_matches_single_runs(configs({"model": model, **SGD, "epochs": 4}, members), digits, LATER)
    assert [o.status for o in outcomes] == ["completed", "completed", "diverged", "completed"]
    assert "training loss became" in outcomes[2].reason


@pytest.mark.parametrize("model", [MLP, CNN])
def test_adam_members_stop_early_at_different_epochs(model: str, digits) -> None:
    members = [{**m, "lr": m["lr"] / 10} for m in EARLY]
    assert_matches_single_runs(configs({"model": model, **ADAM, "epochs": 4}, members), digits, LATER)


def test_a_stopped_member_keeps_its_weights_while_the_others_train(digits) -> None:
    cfgs = configs({"model": "mlp:32/bn", **SGD, "epochs": 3},
                   [{"lr": 0.05, "patience": 1, **NEVER_BETTER, "restore_best": False}, {"seed": 1, "lr": 0.05}])
    pop = trained(cfgs, digits)
    stopped, going = pop.members
    assert (stopped.epoch, going.epoch) == (2, 3)
    # its parameters did not move from its stop on (lr 0); its batch statistics are its final state's
    assert max_difference(stopped.final_state, {k: v for k, v in pop.snapshot(0).items() if "running" not in k
                                                and k in stopped.final_state} | {k: stopped.final_state[k]
                                                for k in stopped.final_state if "running" in k}) == 0.0


def test_a_diverged_member_leaves_the_others_finite(digits) -> None:
    pop = trained(configs({"model": MLP, **SGD, "epochs": 2}, [DIVERGES, {"seed": 1, "lr": 0.05}]), digits)
    assert [m.outcome.status for m in pop.members] == ["diverged", "completed"]
    assert all(math.isfinite(row["train_loss"]) for row in pop.members[1].history)
    assert all(torch.isfinite(v).all() for v in pop.member_state(1).values() if v.is_floating_point())


@pytest.mark.parametrize("members,message", [
    ([{"batch_size": 32}, {"batch_size": 64}], "differ in batch_size"),
    ([{"model": "mlp:32"}, {"model": "mlp:64"}], "differ in model"),
    ([{"momentum": 0.9, "optimizer": "sgd"}, {"momentum": 0.5, "optimizer": "sgd"}], "differ in momentum"),
    ([{"compile": True}], "compile"),
])
def test_members_that_cannot_train_together_are_refused(members: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_members(configs({"model": MLP}, members))


def test_a_module_vmap_cannot_map_is_refused_as_unstackable(digits) -> None:
    from usermodels import ItemNet

    from tinyvision.training.stacked import Unstackable

    cfgs = configs({}, [{"seed": 0}, {"seed": 1}])
    with pytest.raises(Unstackable, match="vmap cannot map ItemNet"):
        prepare(cfgs, model=ItemNet, data=digits)
    assert trained(cfgs[:1], digits, ItemNet).members[0].outcome.status == "completed"  # alone it trains


def test_a_population_of_user_modules_matches_their_single_runs(digits) -> None:
    """A user's own module with batch norm, as a population of 3 and as 3 runs alone."""
    from usermodels import BNNet

    cfgs = configs({"optimizer": "sgd", "momentum": 0.9, "model_args": {"width": 4}},
                   [{"seed": 0, "lr": 0.05}, {"seed": 1, "lr": 0.02}, {"seed": 2, "lr": 0.05}])
    assert_matches_single_runs(cfgs, digits, BATCH_NORM, model=BNNet)


def test_dropout_draws_masks_per_member(digits) -> None:
    """Dropout in a population: each member its own masks (two members of one seed and one config
    still end apart), trained and finite."""
    from usermodels import DropNet

    pop = trained(configs({"epochs": 2}, [{"seed": 0}, {"seed": 0}]), digits, DropNet)
    a, b = pop.member_state(0), pop.member_state(1)
    assert max_difference(a, b) > 1e-4
    assert all(m.outcome.status == "completed" and m.history[-1]["val_accuracy"] > 0.5 for m in pop.members)


# -- the one update written by hand -----------------------------------------------------------------

@pytest.mark.parametrize("kind,members", [
    ("sgd", [{"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}, {"lr": 0.05, "momentum": 0.9}, {"lr": 0.5, "momentum": 0.9}]),
    ("sgd", [{"lr": 0.1, "momentum": 0.9, "nesterov": True}, {"lr": 0.05, "momentum": 0.9, "nesterov": True}]),
    ("sgd", [{"lr": 0.1}, {"lr": 0.01, "weight_decay": 0.1}]),
    ("adam", [{"lr": 1e-2, "weight_decay": 1e-3}, {"lr": 1e-3}, {"lr": 0.1}]),
    ("adamw", [{"lr": 1e-2, "weight_decay": 1e-2}, {"lr": 1e-3}, {"lr": 0.1, "weight_decay": 0.1}]),
    ("adamax", [{"lr": 2e-3, "weight_decay": 1e-3}, {"lr": 1e-2}]),
    ("adadelta", [{"lr": 1.0}, {"lr": 0.3, "weight_decay": 1e-2}]),
    ("adam", [{"lr": 3e-3}, {"lr": 3e-3}]),  # one lr: torch steps them at it, nothing scaled
])
def test_member_optimiser_steps_as_torch_steps_each_member(kind: str, members: list) -> None:
    """30 steps of gradients spanning six orders of magnitude: each member's slice moves as torch's
    optimiser (tinyvision's, optim.build_optimizer) moves that member's tensor alone, within fp32
    rounding; member 1 stops after step 20 and stays exactly where it was."""
    from torch import nn

    from tinyvision.optim import build_optimizer
    from tinyvision.training.member_optim import MemberOptimizer

    cfgs = [make_config({**BASE, "optimizer": kind, **m}) for m in members]
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(len(cfgs), 5, 7, generator=gen)
    grads = [torch.randn(len(cfgs), 5, 7, generator=gen) * 10.0 ** torch.randint(-6, 0, (len(cfgs), 5, 7), generator=gen)
             for _ in range(30)]
    stacked = nn.Parameter(start.clone())
    optimizer = MemberOptimizer([stacked], cfgs, steps_per_epoch=1)
    for i, g in enumerate(grads):
        stacked.grad = g.clone()
        optimizer.step([k != 1 or i < 20 for k in range(len(cfgs))])
        if i == 19:
            frozen = stacked[1].detach().clone()
    for k, cfg in enumerate(cfgs):
        single = nn.Parameter(start[k].clone())
        reference = build_optimizer(nn.ParameterList([single]), cfg)
        for g in grads[: 20 if k == 1 else 30]:
            single.grad = g[k].clone()
            reference.step()
        torch.testing.assert_close(stacked[k].detach(), single.detach(), rtol=2e-6, atol=1e-7, msg=f"member {k}")
        state, _ = optimizer.member_state(k)
        if k != 1 and reference.state[single]:  # its state, as its own optimiser holds it
            for key, value in reference.state[single].items():
                torch.testing.assert_close(state["state"][0][key], value, rtol=2e-6, atol=1e-7)
    assert torch.equal(stacked[1].detach(), frozen)


# -- as runs: the run directories -------------------------------------------------------------------

def run_files(run_dir: Any) -> dict[str, Any]:
    """What a run directory holds, as the readers (tables, report, evaluate) see it."""
    from tinyvision import runs
    from tinyvision.files import load_weights

    result = runs.read_result(run_dir)
    weights, meta = load_weights(run_dir / runs.WEIGHTS)
    return {"files": sorted(p.name for p in run_dir.iterdir() if p.name != runs.CHECKPOINT), "result": result,
            "metrics": runs.read_metrics(run_dir), "weights": weights, "meta": meta,
            "predictions": runs.read_predictions(run_dir)}


def test_an_experiment_in_populations_writes_what_one_at_a_time_writes(tmp_path) -> None:
    """--population 3: the 8 runs (2 optimisers x 2 rates x 2 seeds) train as populations of at most
    3 runs that share an optimiser; every run directory reads as the one-at-a-time run's."""
    from tinyvision import runs as runs_of
    from tinyvision.experiments import build_experiment, run_experiment
    from tinyvision.experiments.groups import plan
    from tinyvision.experiments.runner import prepare_dir

    spec = {"name": "pop", "base": {**BASE, "model": MLP, "epochs": 2, "patience": 1},
            "grid": {"optimizer": ["adam", "adamax"], "lr": [0.01, 0.003]}, "repeats": 2}
    jobs = prepare_dir(build_experiment(spec), tmp_path / "plan")
    assert [len(unit) for unit in plan(jobs, range(len(jobs)), 3)] == [3, 1, 3, 1]
    _, grouped, table = run_experiment(build_experiment(spec), tmp_path / "grouped", quiet=True, population=3)
    _, alone, _ = run_experiment(build_experiment(spec), tmp_path / "alone", quiet=True, population=1)
    assert [r["completed"] for r in grouped] == [2, 2, 2, 2] and "±" in table
    for mine_dir in sorted((tmp_path / "grouped" / "runs").glob("*/seed*")):
        mine, theirs = run_files(mine_dir), run_files(tmp_path / "alone" / mine_dir.relative_to(tmp_path / "grouped"))
        assert mine["files"] == theirs["files"], mine_dir
        skip = {"run_dir", "started", "finished", "total_seconds", "train_seconds", "mean_epoch_seconds",
                "versions", "population", "test", "best_val"}
        assert {k: v for k, v in mine["result"].items() if k not in skip} == \
            {k: v for k, v in theirs["result"].items() if k not in skip}
        assert mine["result"]["test"]["loss"] == pytest.approx(theirs["result"]["test"]["loss"], rel=1e-5)
        assert mine["meta"] == theirs["meta"] and max_difference(mine["weights"], theirs["weights"]) < 1e-4
        assert torch.allclose(mine["predictions"].probs, theirs["predictions"].probs, atol=1e-5)
        assert [r["epoch"] for r in mine["metrics"]] == [r["epoch"] for r in theirs["metrics"]]
    members = [runs_of.read_result(d).get("population") for d in (tmp_path / "grouped" / "runs").glob("*/seed*")]
    assert sorted(m["member"] for m in members if m) == [0, 0, 1, 1, 2, 2]  # two populations of 3; two alone
    for a, b in zip(grouped, alone):
        assert a["test_accuracy_mean"] == pytest.approx(b["test_accuracy_mean"], abs=2e-3)


@pytest.mark.parametrize("optimizer", [ADAM, SGD], ids=["adam", "sgd"])
def test_a_member_checkpoint_extends_like_its_single_run(optimizer: dict, tmp_path, digits) -> None:
    """A completed member leaves its single run's checkpoint: `train --resume` with more epochs
    continues it as it continues the run trained alone."""
    from tinyvision import runs
    from tinyvision.files import load_weights
    from tinyvision.pipeline import train, train_runs

    cfgs = configs({"model": MLP, **optimizer, "epochs": 2, "schedule": "exponential", "gamma": 0.5},
                   [{"seed": 0, "lr": 0.003}, {"seed": 1, "lr": 0.001}])
    results = train_runs(cfgs, [tmp_path / "pop" / str(k) for k in range(2)], data=digits, quiet=True)
    assert [r["population"]["member"] for r in results] == [0, 1]
    for k, cfg in enumerate(cfgs):
        train(cfg, run_dir=tmp_path / "alone" / str(k), data=digits, quiet=True)
        for side in ("pop", "alone"):
            run_dir = tmp_path / side / str(k)
            longer = runs.read_config(run_dir).model_copy(update={"epochs": 3})
            runs.write_config(run_dir, longer)
            assert train(longer, run_dir=run_dir, data=digits, resume=True, quiet=True)["epochs_run"] == 3
        mine, theirs = (load_weights(tmp_path / side / str(k) / runs.WEIGHTS)[0] for side in ("pop", "alone"))
        assert max_difference(mine, theirs) < ONE_EPOCH[0]
        rows = [runs.read_metrics(tmp_path / side / str(k)) for side in ("pop", "alone")]
        assert [r["lr"] for r in rows[0]] == [r["lr"] for r in rows[1]] == [cfg.lr, cfg.lr / 2, cfg.lr / 4]


@pytest.mark.slow
def test_run_with_jobs_and_population_from_the_command_line(tmp_path) -> None:
    """`tinyvision run EXP --jobs 2 --population 2`: two worker processes, each training a population."""
    import yaml

    from tinyvision import runs
    from tinyvision.cli import main

    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"name": "p", "base": {**BASE, "model": MLP, "epochs": 2},
                                                       "repeats": 4}))
    code = main(["run", str(tmp_path / "exp.yaml"), "--exp-dir", str(tmp_path / "p"), "--jobs", "2",
                 "--population", "2", "--quiet", "--no-report"])
    results = [runs.read_result(d) for d in sorted((tmp_path / "p" / "runs").glob("*/seed*"))]
    assert code == 0 and [r["status"] for r in results] == ["completed"] * 4
    assert sorted((r["population"]["members"], r["population"]["member"]) for r in results) == \
        [(2, 0), (2, 0), (2, 1), (2, 1)]
    assert (tmp_path / "p" / "results.csv").exists()
