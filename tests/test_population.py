"""Populations against the single runs they stand for: K members trained as one stacked model must
match K runs of loop.fit (pipeline.build with the same configs) within fp32 tolerance: weights,
metrics rows, best epochs, early stopping and divergence per member.

Tolerances (measured on this project's 2-core CPU, fp32, one thread): each member's optimiser
step is the kernel its single run uses, so where the stacked forward and backward round as the
single model does (the MLPs here, one thread) weights and metrics are bit-identical; grouped
convolutions round differently, and after one epoch of Digits (16 steps) a CNN's weights differ by
at most 3e-6 and its metrics by 2e-7 relative. Over several epochs the difference grows chaotically
where the optimiser amplifies rounding: a CNN with Adam differs by 2e-3 in weights and 8e-4 in
metrics after 4 epochs (Adam's first steps are lr * sign(g), so a parameter whose gradient is ~0
moves by the sign of rounding noise; at lr 1e-2 that is 2.5e-3 after one epoch). The one-epoch
bounds are 30x-50x the measured differences, the later ones 6x-10x, and all far below what a wrong
learning rate, seed, data order or weight decay gives (1e-2 and more in one epoch).
"""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from tinyvision.config import make_config
from tinyvision.data import load_data
from tinyvision.loop import fit
from tinyvision.pipeline import build
from tinyvision.population import build_population, check_members, fit_population

ONE_EPOCH = (1e-4, 1e-5)  # weights (absolute), metrics: losses, accuracies, lr (relative)
LATER = (2e-2, 5e-3)  # after 4 epochs
METRIC_COLUMNS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
BASE = {"dataset": "digits", "precision": "fp32", "epochs": 1, "threads": 1}  # one thread: steady on a shared machine
MLP, CNN = "digits-mlp", "digits-cnn"  # 5 dense layers; conv16-conv64-fc256-fc128 (grouped convolutions)
NEVER_BETTER = {"min_delta": 100.0}  # epoch 1 improves on inf, no later epoch can: stops after `patience`


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_data(make_config(BASE))


def configs(base: dict, members: list[dict]) -> list:
    return [make_config({**BASE, **base, **m}) for m in members]


def single_run(cfg: Any, data: Any) -> tuple[Any, Any, dict[str, torch.Tensor]]:
    """(outcome, state, final weights) of the run as `tinyvision train` trains it."""
    setup = build(cfg, data)
    outcome = fit(setup.state, setup.train_loader, setup.val_loader, cfg)
    return outcome, setup.state, {k: v.detach().clone() for k, v in setup.net.state_dict().items()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_matches_single_runs(cfgs: list, data: Any, tolerances: tuple[float, float]) -> list:
    """Train the population and each single run; compare member by member. Returns the outcomes."""
    weights_tol, metrics_tol = tolerances
    pop = build_population(cfgs, data)
    outcomes = fit_population(pop)
    for k, cfg in enumerate(cfgs):
        outcome, state, weights = single_run(cfg, data)
        member = pop.members[k]
        assert (outcomes[k].status, member.stopped_early, member.best_epoch, member.epoch) == \
            (outcome.status, state.stopped_early, state.best_epoch, state.epoch), f"member {k}"
        assert len(member.history) == len(state.history), f"member {k}"
        for mine, theirs in zip(member.history, state.history):
            assert mine["epoch"] == theirs["epoch"] and mine["best_epoch"] == theirs["best_epoch"]
            for column in METRIC_COLUMNS:
                assert mine[column] == pytest.approx(theirs[column], rel=metrics_tol), (k, mine["epoch"], column)
        if outcome.status == "diverged":
            assert outcomes[k].reason.split(" at ")[1].split(",")[0] == outcome.reason.split(" at ")[1].split(",")[0]
        else:
            assert max_difference(pop.member_model(k).state_dict(), weights) < weights_tol, f"member {k}"
    return outcomes


@pytest.mark.parametrize("model,extra", [(MLP, {}), (CNN, {}), (CNN, {"batch_norm": True}),
                                         ("mlp:32/bn", {"init": "kaiming"})])
def test_members_start_bit_exactly_where_their_single_runs_start(model: str, extra: dict, digits) -> None:
    cfgs = configs({"model": model, **extra}, [{"seed": 3}, {"seed": 0, "init": "xavier"}, {"seed": 7}])
    pop = build_population(cfgs, digits)
    for k, cfg in enumerate(cfgs):
        start = build(cfg, digits).net.state_dict()
        mine = pop.net.snapshot(k)
        assert mine.keys() == start.keys()
        assert all(torch.equal(mine[name], start[name]) for name in start), f"member {k}"


SGD = {"optimizer": "sgd", "momentum": 0.9}
ADAM = {"optimizer": "adam"}
SGD_MEMBERS = [{"seed": 0, "lr": 0.05}, {"seed": 1, "lr": 0.01, "momentum": 0.5},
               {"seed": 2, "lr": 0.1, "weight_decay": 1e-3}]
ADAM_MEMBERS = [{"seed": 0, "lr": 1e-3}, {"seed": 1, "lr": 3e-3}, {"seed": 2, "lr": 2e-3, "weight_decay": 1e-3}]


@pytest.mark.parametrize("model,optimizer,members", [
    (MLP, SGD, SGD_MEMBERS), (MLP, ADAM, ADAM_MEMBERS), (MLP, {"optimizer": "adamw"}, ADAM_MEMBERS),
    (CNN, SGD, SGD_MEMBERS), (CNN, ADAM, ADAM_MEMBERS),
    (CNN, {"optimizer": "adamw"}, ADAM_MEMBERS),
], ids=["mlp-sgd", "mlp-adam", "mlp-adamw", "cnn-sgd", "cnn-adam", "cnn-adamw"])
def test_one_epoch_matches_single_runs(model: str, optimizer: dict, members: list, digits) -> None:
    assert_matches_single_runs(configs({"model": model, **optimizer}, members), digits, ONE_EPOCH)


@pytest.mark.parametrize("model", [MLP, CNN])
def test_members_with_one_seed_share_the_batch(model: str, digits) -> None:
    cfgs = configs({"model": model, **ADAM}, [{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 2e-3, "label_smoothing": 0.1}])
    assert build_population(cfgs, digits).member_batches.shared
    assert_matches_single_runs(cfgs, digits, ONE_EPOCH)


@pytest.mark.parametrize("model", [MLP, CNN])
@pytest.mark.parametrize("augment", ["none", "translate"])
def test_members_in_blocks_of_one_seed_share_their_block_batch(model: str, augment: str, digits) -> None:
    members = [{"seed": 4, "lr": 1e-3}, {"seed": 4, "lr": 3e-3}, {"seed": 1, "lr": 2e-3}, {"seed": 1, "lr": 1e-3},
               {"seed": 1, "lr": 5e-4}]
    cfgs = configs({"model": model, **ADAM, "augment": augment, "translate": 1}, members)
    assert build_population(cfgs, digits).member_batches.sizes == [2, 3]
    assert_matches_single_runs(cfgs, digits, ONE_EPOCH)


def test_seed_blocks() -> None:
    from tinyvision.population.data import seed_blocks

    assert seed_blocks([0, 0, 1, 1, 1]) == [2, 3] and seed_blocks([0, 1, 2]) is None
    assert seed_blocks([0, 1, 0]) is None  # seed 0 in two blocks: a batch per member


@pytest.mark.parametrize("base", [
    {"model": MLP, "augment": "translate", "translate": 1, "label_smoothing": 0.1},  # augmentation per member
    {"model": CNN, "batch_norm": True, "optimizer": "sgd", "momentum": 0.9},  # per-member batch statistics
    {"model": "mlp:64/bn", "schedule": "onecycle", "optimizer": "sgd", "momentum": 0.9},  # cycles momentum too
    {"model": MLP, "schedule": "exponential", "gamma": 0.5, "epochs": 2, "eval_before": True},
], ids=["augment", "cnn-bn", "onecycle", "exponential"])
def test_data_order_augmentation_schedules_and_batch_norm_per_member(base: dict, digits) -> None:
    members = [{"seed": 0, "lr": 0.003}, {"seed": 1, "lr": 0.001, "label_smoothing": 0.0}, {"seed": 2, "lr": 0.02}]
    assert_matches_single_runs(configs({"optimizer": "adam", **base}, members), digits, ONE_EPOCH)


EARLY = [{"seed": 0, "lr": 0.05, "patience": 1, **NEVER_BETTER},  # stops after epoch 2
         {"seed": 1, "lr": 0.01, "patience": 2, **NEVER_BETTER, "restore_best": False},  # after 3, keeps epoch 3's
         {"seed": 3, "lr": 0.02}]  # all 4 epochs
DIVERGES = {"seed": 2, "lr": 10.0}  # SGD at lr 10, momentum 0.9: NaN within the first epoch (measured: step 6-10)


@pytest.mark.parametrize("model", [MLP, CNN])
def test_members_stop_early_at_different_epochs_and_one_diverges(model: str, digits) -> None:
    members = [*EARLY[:2], DIVERGES, EARLY[2]]
    outcomes = assert_matches_single_runs(configs({"model": model, **SGD, "epochs": 4}, members), digits,
                                          LATER)
    assert [o.status for o in outcomes] == ["completed", "completed", "diverged", "completed"]
    assert "training loss became" in outcomes[2].reason


@pytest.mark.parametrize("model", [MLP, CNN])
def test_adam_members_stop_early_at_different_epochs(model: str, digits) -> None:
    members = [{**m, "lr": m["lr"] / 10} for m in EARLY]
    assert_matches_single_runs(configs({"model": model, **ADAM, "epochs": 4}, members), digits, LATER)


def test_a_stopped_member_keeps_its_weights_while_the_others_train(digits) -> None:
    cfgs = configs({"model": MLP, **SGD, "epochs": 3}, [{"lr": 0.05, "patience": 1, **NEVER_BETTER,
                                                        "restore_best": False}, {"seed": 1, "lr": 0.05}])
    pop = build_population(cfgs, digits)
    fit_population(pop)
    stopped, trained = pop.members
    assert (stopped.epoch, trained.epoch) == (2, 3)
    assert max_difference(stopped.final_state, pop.net.snapshot(0)) == 0.0  # lr 0 from its stop on


def test_a_diverged_member_leaves_the_others_finite(digits) -> None:
    cfgs = configs({"model": MLP, **SGD, "epochs": 2}, [DIVERGES, {"seed": 1, "lr": 0.05}])
    pop = build_population(cfgs, digits)
    outcomes = fit_population(pop)
    assert [o.status for o in outcomes] == ["diverged", "completed"]
    assert all(math.isfinite(row["train_loss"]) for row in pop.members[1].history)
    assert all(torch.isfinite(v).all() for v in pop.member_model(1).state_dict().values())


@pytest.mark.parametrize("members,message", [
    ([{"batch_size": 32}, {"batch_size": 64}], "differ in batch_size"),
    ([{"model": "mlp:32"}, {"model": "mlp:64"}], "differ in model"),
    ([{"optimizer": "adamax"}, {"optimizer": "adamax"}], "optimizer adamax"),
    ([{"model": "mlp:32/drop0.5"}], "Dropout"),
])
def test_members_that_cannot_train_together_are_refused(members: list, message: str, digits) -> None:
    cfgs = configs({"model": MLP}, members)
    with pytest.raises(ValueError, match=message):
        check_members(cfgs)
        build_population(cfgs, digits)


@pytest.mark.parametrize("kind,members", [
    ("sgd", [{"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}, {"lr": 0.05, "momentum": 0.0}, {"lr": 0.5}]),
    ("sgd", [{"lr": 0.1, "momentum": 0.9, "nesterov": True}, {"lr": 0.05, "momentum": 0.5, "nesterov": True}]),
    ("adam", [{"lr": 1e-2, "weight_decay": 1e-3}, {"lr": 1e-3}, {"lr": 0.1}]),
    ("adamw", [{"lr": 1e-2, "weight_decay": 1e-2}, {"lr": 1e-3}, {"lr": 0.1, "weight_decay": 0.1}]),
])
@pytest.mark.parametrize("fused", [True, False], ids=["kernels", "multi-tensor"])
def test_member_optimiser_steps_as_torch_steps_each_member(kind: str, members: list, fused: bool) -> None:
    """30 steps of gradients spanning six orders of magnitude: each member's slice moves as torch's
    optimiser (tinyvision's fused one, optim.build_optimizer) moves that member's single tensor:
    bit for bit with the kernels, within fp32 rounding with the multi-tensor fallback."""
    from torch import nn

    from tinyvision.optim import build_optimizer
    from tinyvision.population.step import MemberOptimizer, MemberSchedules

    nesterov = any(m.get("nesterov") for m in members)
    cfgs = [make_config({**BASE, "optimizer": kind, **m, "nesterov": nesterov}) for m in members]
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(len(cfgs), 5, 7, generator=gen)
    grads = [torch.randn(len(cfgs), 5, 7, generator=gen) * 10.0 ** torch.randint(-6, 0, (len(cfgs), 5, 7), generator=gen)
             for _ in range(30)]
    stacked = nn.Parameter(start.clone())
    optimizer = MemberOptimizer([stacked], len(cfgs), kind, nesterov, fused=fused)
    groups = MemberSchedules(cfgs, 1).groups()
    for g in grads:
        stacked.grad = g.clone()
        optimizer.step(groups, [True] * len(cfgs))
    for k, cfg in enumerate(cfgs):
        single = nn.Parameter(start[k].clone())
        reference = build_optimizer(nn.ParameterList([single]), cfg)
        for g in grads:
            single.grad = g[k].clone()
            reference.step()
        difference = float((stacked[k] - single).detach().abs().max())
        assert difference == 0.0 if fused else difference < 1e-6, f"member {k}"


def run_files(run_dir: Any) -> dict[str, Any]:
    """What a run directory holds, as the readers (tables, report, evaluate) see it."""
    from tinyvision import runs
    from tinyvision.checkpoint import load_weights

    result = runs.read_result(run_dir)
    weights, meta = load_weights(run_dir / runs.WEIGHTS)
    return {"files": sorted(p.name for p in run_dir.iterdir() if p.name != runs.CHECKPOINT), "result": result,
            "metrics": runs.read_metrics(run_dir), "weights": weights, "meta": meta,
            "predictions": runs.read_predictions(run_dir)}


def test_an_experiment_in_populations_writes_what_one_at_a_time_writes(tmp_path) -> None:
    """--population 3: the 4 Adam runs train as populations of 3 and 1, the 4 Adamax runs (no
    population optimiser) one at a time; every run directory reads as the one-at-a-time run's."""
    from tinyvision import runs as runs_of
    from tinyvision.experiments import build_experiment, run_experiment
    from tinyvision.experiments.runner import plan, prepare_dir

    spec = {"name": "pop", "base": {**BASE, "model": MLP, "epochs": 2, "patience": 1},
            "grid": {"optimizer": ["adam", "adamax"], "lr": [0.01, 0.003]}, "repeats": 2}
    jobs = prepare_dir(build_experiment(spec), tmp_path / "plan")
    assert [len(unit) for unit in plan(jobs, range(len(jobs)), 3)] == [3, 1, 1, 1, 1, 1]
    _, grouped, table = run_experiment(build_experiment(spec), tmp_path / "grouped", quiet=True, population=3)
    _, alone, _ = run_experiment(build_experiment(spec), tmp_path / "alone", quiet=True)
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
    assert sorted(m["member"] for m in members if m) == [0, 1, 2]  # one population of 3; the rest alone
    for a, b in zip(grouped, alone):
        assert a["test_accuracy_mean"] == pytest.approx(b["test_accuracy_mean"], abs=1e-9)


@pytest.mark.parametrize("optimizer", [ADAM, SGD], ids=["adam", "sgd"])
def test_a_member_checkpoint_extends_like_its_single_run(optimizer: dict, tmp_path, digits) -> None:
    """A completed member leaves its single run's checkpoint: `train --resume` with more epochs
    continues it as it continues the run trained alone."""
    from tinyvision import runs
    from tinyvision.checkpoint import load_weights
    from tinyvision.pipeline import train
    from tinyvision.population.run import train_members

    cfgs = configs({"model": MLP, **optimizer, "epochs": 2, "schedule": "exponential", "gamma": 0.5},
                   [{"seed": 0, "lr": 0.003}, {"seed": 1, "lr": 0.001}])
    train_members(cfgs, [tmp_path / "pop" / str(k) for k in range(2)], data=digits)
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


@pytest.mark.parametrize("optimizer", [ADAM, SGD], ids=["adam", "sgd"])
def test_members_that_step_alike_share_a_kernel_call_bit_identically(optimizer: dict, digits) -> None:
    """Seeds only: every member's step is the same kernel call over all their slices (one call, not
    K), and each member still ends bit-identical to its single run (MLP, one thread)."""
    from tinyvision.population.step import MemberOptimizer

    cfgs = configs({"model": MLP, **optimizer, "lr": 0.003 if optimizer is ADAM else 0.05},
                   [{"seed": s} for s in range(4)])
    pop = build_population(cfgs, digits)
    assert pop.optimizer._kernel_batches(pop.schedules.groups(), [True] * 4) == [[0, 1, 2, 3]]
    assert isinstance(pop.optimizer, MemberOptimizer) and pop.optimizer.fused
    fit_population(pop)
    for k, cfg in enumerate(cfgs):
        _, _, weights = single_run(cfg, digits)
        assert max_difference(pop.member_model(k).state_dict(), weights) == 0.0, f"member {k}"
