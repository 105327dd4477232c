"""Training controls: gradient clipping by total norm (each run its own, in a population too),
reduce-on-plateau on the validation NLL (each member with its own loss), and fp16's gradient
scaler (its state in the checkpoint; fp16 itself needs a GPU: tests/test_device.py).

References: torch.nn.utils.clip_grad_norm_ and hand-computed norms for clipping; a written
sequence of validation losses and the lr it must give for the plateau rule (optim.plateau_scheduler:
better = below the best minus min_delta; plateau_patience bad epochs waited out, the next one
multiplies the lr by gamma); single runs for populations (tests/test_stacked.py's helpers).
"""
from __future__ import annotations

import importlib
import math
from typing import Any

import pytest
import torch
from torch import nn

from test_resume import stop_after
from test_stacked import BASE, LATER, MLP, ONE_EPOCH, SGD, assert_matches_single_runs, configs, trained

import tinyvision as tv
from tinyvision import runs
from tinyvision.checkpoint import FORMAT
from tinyvision.config import make_config
from tinyvision.data import load_data
from tinyvision.errors import ConfigError
from tinyvision.files import load_state, save_state
from tinyvision.optim import build_optimizer, build_scheduler
from tinyvision.pipeline import prepare
from tinyvision.training.member_optim import MemberOptimizer, MemberSchedules, clip_members
from tinyvision.training.plan import check_members, plan_groups

build_module = importlib.import_module("tinyvision.training.build")


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_data(make_config(BASE))

W = torch.tensor([3.0, 4.0, 0, 0, 0, 0, 0, 0, 0, 0])  # the loss's gradient for the bias: norm 5


class Bias(nn.Module):
    """Logits = a learned bias, whatever the image: with bias_loss its gradient is W exactly."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b.expand(len(x), -1)


def bias_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out * W).sum(dim=1).mean()


# -- clipping ---------------------------------------------------------------------------------

PLAIN_SGD = {"optimizer": "sgd", "lr": 1.0, "momentum": 0.0}  # one step moves a weight by -its gradient


@pytest.mark.parametrize("limit,scale", [(1.0, 1.0 / (5.0 + 1e-6)), (10.0, 1.0), (None, 1.0)],
                         ids=["above", "below", "off"])
def test_a_run_clips_its_gradient_norm_to_the_limit(limit, scale, digits) -> None:
    trainee, _ = prepare(configs({**PLAIN_SGD, "clip_grad_norm": limit}, [{}]), model=Bias, loss=bias_loss,
                         data=digits)
    x, y = next(trainee.batches())
    trainee.train_step(x, y, [True])
    torch.testing.assert_close(trainee.net.b.detach(), -W * scale, rtol=1e-6, atol=0)  # norm 5: above 1, below 10


def test_population_members_clip_each_their_own_norm(digits) -> None:
    """One stacked step: member 0's norm 5 clipped to 1, member 1's below its limit of 10, member 2
    not clipped; each as its single run."""
    cfgs = configs(PLAIN_SGD, [{"seed": 0, "clip_grad_norm": 1.0}, {"seed": 1, "clip_grad_norm": 10.0},
                               {"seed": 2, "clip_grad_norm": None}])
    pop, _ = prepare(cfgs, model=Bias, loss=bias_loss, data=digits)
    assert type(pop).__name__ == "StackedModules"
    x, y = next(pop.batches())
    pop.train_step(x, y, [True] * 3)
    for k, scale in enumerate([1.0 / (5.0 + 1e-6), 1.0, 1.0]):
        torch.testing.assert_close(pop.snapshot(k)["b"], -W * scale, rtol=1e-6, atol=0)


def test_member_clipping_is_clip_grad_norm_per_member_bit_for_bit() -> None:
    """Random stacked gradients over several tensors (a [K] one too) of six orders of magnitude:
    each member's rows are what clip_grad_norm_ makes of that member's tensors alone."""
    gen = torch.Generator().manual_seed(0)
    limits = [0.37, 1.3, 2.9, 1e9]
    for _ in range(50):
        grads = [torch.randn(4, *shape, generator=gen) * 10.0 ** float(torch.randint(-3, 3, (), generator=gen))
                 for shape in ((5, 7), (7,), (3, 2, 2, 2), ())]
        stacked = [g.clone() for g in grads]
        norms = clip_members(stacked, torch.tensor(limits))
        for k, limit in enumerate(limits):
            own = [nn.Parameter(g[k].clone()) for g in grads]
            for p, g in zip(own, grads):
                p.grad = g[k].clone()
            assert norms[k] == nn.utils.clip_grad_norm_(own, limit)
            assert all(torch.equal(p.grad, s[k]) for p, s in zip(own, stacked)), k


def test_clipping_in_the_member_optimiser_before_decay_and_unclipped_members_untouched() -> None:
    """MemberOptimizer: member 0 (norm 50 over two tensors, limit 1) clipped, member 1 (no limit)
    stepped with its gradient as it is, L2 decay added after clipping as torch.optim adds it."""
    cfgs = [make_config(optimizer="sgd", lr=0.1, weight_decay=0.01, clip_grad_norm=1.0),
            make_config(optimizer="sgd", lr=0.1)]
    a, b = nn.Parameter(torch.ones(2, 3)), nn.Parameter(torch.ones(2, 1))
    optimizer = MemberOptimizer([a, b], cfgs, steps_per_epoch=1)
    a.grad = torch.tensor([[30.0, 0, 0], [30.0, 0, 0]])
    b.grad = torch.tensor([[40.0], [40.0]])
    optimizer.step([True, True])
    coef = 1.0 / (50.0 + 1e-6)
    torch.testing.assert_close(a[0].detach(), 1 - 0.1 * (torch.tensor([30.0, 0, 0]) * coef + 0.01))
    torch.testing.assert_close(b[0].detach(), 1 - 0.1 * (torch.tensor([40.0]) * coef + 0.01))
    torch.testing.assert_close(a[1].detach(), torch.tensor([-2.0, 1, 1]))
    torch.testing.assert_close(b[1].detach(), torch.tensor([-3.0]))


@pytest.mark.parametrize("base,members,tolerances", [
    # digits-mlp's gradient norm under SGD is 0.13-0.21 in its first epoch (measured): a limit of 0.05
    # clips every step, 0.15 some. Measured against single runs: weights 5e-8, metrics 3e-8
    ({"model": MLP, **SGD}, [{"seed": 0, "lr": 0.2, "clip_grad_norm": 0.05},
                             {"seed": 1, "lr": 0.1, "clip_grad_norm": 0.15}, {"seed": 2, "lr": 0.1}], ONE_EPOCH),
    # a CNN under Adam (measured: weights 3e-5, metrics 2e-7; chaotic after one rounding, as test_stacked's)
    ({"model": "cnn:16-64/k3/fc256-128", "optimizer": "adam"}, [{"seed": 0, "lr": 3e-3, "clip_grad_norm": 0.01},
                                                   {"seed": 1, "lr": 1e-3, "clip_grad_norm": 2.0}], LATER),
], ids=["mlp-sgd", "cnn-adam"])
def test_a_population_with_clipping_matches_its_single_runs(base, members, tolerances, digits) -> None:
    cfgs = configs(base, members)
    assert_matches_single_runs(cfgs, digits, tolerances)
    clipped, free = trained(cfgs[:1], digits), trained([cfgs[0].model_copy(update={"clip_grad_norm": None})], digits)
    assert clipped.members[0].history[-1]["train_loss"] != free.members[0].history[-1]["train_loss"]  # it bit


# -- reduce on plateau ------------------------------------------------------------------------

# min_delta 0.01, plateau_patience 2, gamma 0.5: (validation loss, lr for the next epoch)
PLATEAU = [(1.0, 1.0),  # the first: the best
           (0.995, 1.0), (0.991, 1.0),  # not below 1.0 - 0.01: bad epochs 1, 2 (waited out)
           (0.992, 0.5),  # bad epoch 3 > patience: lr x gamma, the count restarts
           (0.97, 0.5),  # below 0.99: the new best
           (math.nan, 0.5), (0.965, 0.5),  # a non-finite loss is no improvement; 0.965 is not below 0.96
           (0.961, 0.25)]  # bad epoch 3: halved again


def test_plateau_lowers_the_lr_as_documented() -> None:
    cfg = make_config(lr=1.0, schedule="plateau", plateau_patience=2, gamma=0.5, min_delta=0.01)
    optimizer = build_optimizer(nn.ParameterList([nn.Parameter(torch.zeros(1))]), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)
    for loss, lr in PLATEAU:
        scheduler.step(loss)
        assert optimizer.param_groups[0]["lr"] == lr, loss


def test_each_member_steps_its_plateau_with_its_own_loss() -> None:
    cfgs = [make_config(lr=1.0, schedule="plateau", plateau_patience=2, gamma=0.5, min_delta=0.01),
            make_config(lr=0.1, schedule="plateau", plateau_patience=2, gamma=0.5)]
    schedules = MemberSchedules(cfgs, steps_per_epoch=10)
    improving = [1.0 / (e + 1) for e in range(len(PLATEAU))]
    schedules.step(True, [True, True], [1.0, 1.0])  # per step: not a plateau's moment
    assert schedules.lrs() == [1.0, 0.1]
    for (loss, lr), other in zip(PLATEAU, improving):
        schedules.step(False, [True, True], [loss, other])
        assert schedules.lrs() == [lr, 0.1]
    schedules.step(False, [False, True], [5.0, 5.0])  # a stopped member's schedule stays
    assert schedules.lrs() == [0.25, 0.1]


def test_plateau_needs_gamma_below_one() -> None:
    cfg = make_config(schedule="plateau", gamma=1.0)
    with pytest.raises(ConfigError, match="gamma < 1"):
        build_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), cfg, 10)


def test_a_population_with_plateau_matches_its_single_runs(digits) -> None:
    """Member 0 never improves after epoch 1 (min_delta 100): its lr halves after epoch 3; member 1
    improves (its own losses): its lr stays. Each as its single run."""
    cfgs = configs({"model": MLP, **SGD, "schedule": "plateau", "plateau_patience": 1, "gamma": 0.5, "epochs": 4},
                   [{"seed": 0, "lr": 0.05, "min_delta": 100.0, "restore_best": False}, {"seed": 1, "lr": 0.02}])
    assert_matches_single_runs(cfgs, digits, LATER)
    pop = trained(cfgs, digits)
    assert [row["lr"] for row in pop.members[0].history] == [0.05, 0.05, 0.05, 0.025]
    assert pop.members[1].history[0]["lr"] == 0.02 and pop.members[1].history[-1]["val_loss"] < \
        pop.members[1].history[0]["val_loss"]


def test_a_plateau_state_round_trips_through_a_state_file(tmp_path) -> None:
    cfg = make_config(lr=1.0, schedule="plateau", plateau_patience=2, gamma=0.5, min_delta=0.01)
    optimizer = build_optimizer(nn.ParameterList([nn.Parameter(torch.zeros(1))]), cfg)
    scheduler = build_scheduler(optimizer, cfg, 10)
    fresh = scheduler.state_dict()  # best and mode_worse: inf
    for loss, _ in PLATEAU[:5]:
        scheduler.step(loss)
    save_state(tmp_path / "state", {"fresh": fresh, "stepped": scheduler.state_dict()})
    saved = load_state(tmp_path / "state")
    assert saved["fresh"] == fresh and saved["fresh"]["best"] == math.inf
    assert saved["stepped"] == scheduler.state_dict()
    resumed = build_optimizer(nn.ParameterList([nn.Parameter(torch.zeros(1))]), cfg)
    resumed.load_state_dict(optimizer.state_dict())  # the lr is the optimiser's (its own checkpoint entry)
    again = build_scheduler(resumed, cfg, 10)
    again.load_state_dict(saved["stepped"])
    for loss, lr in PLATEAU[5:]:
        again.step(loss)
        assert again.optimizer.param_groups[0]["lr"] == lr


# -- fp16 and its gradient scaler -------------------------------------------------------------

def test_fp16_on_a_cpu_is_refused_in_one_line(tmp_path, capsys) -> None:
    from tinyvision.cli import main

    rc = main(["train", "--dataset", "digits", "--model", "digits-mlp", "--epochs", "1", "--device", "cpu",
               "--out", str(tmp_path), "--quiet", "--no-report", "precision=fp16", "threads=1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "fp16 is for GPUs" in err, err


def test_fp16_runs_train_alone() -> None:
    cfgs = [make_config(dataset="digits", model=MLP, precision="fp16", seed=s) for s in range(3)]
    with pytest.raises(ValueError, match="precision=fp16"):
        check_members(cfgs)
    assert plan_groups(cfgs, cap=None) == [[0], [1], [2]]


def test_runs_resolved_to_fp16_are_refused_as_a_population(monkeypatch, digits) -> None:
    """precision auto may measure fp16 fastest on a GPU without bf16: the population is refused as
    Unstackable (its runs then train one at a time)."""
    from tinyvision.training.stacked import Unstackable

    monkeypatch.setattr(build_module, "autocast_dtype", lambda *args: torch.float16)
    with pytest.raises(Unstackable, match="fp16"):
        prepare(configs({"model": MLP}, [{"seed": 0}, {"seed": 1}]), data=digits)


def test_a_scaler_state_round_trips_through_a_state_file(tmp_path) -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    p = nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([p], lr=0.1)
    for _ in range(4):
        optimizer.zero_grad()
        scaler.scale(p.square().sum()).backward()
        scaler.step(optimizer)
        scaler.update()
    save_state(tmp_path / "state", {"scaler": scaler.state_dict()})
    saved = load_state(tmp_path / "state")["scaler"]
    assert saved == scaler.state_dict() and saved["scale"] == 2.0**11 and saved["_growth_tracker"] == 1
    again = torch.amp.GradScaler("cpu")
    again.load_state_dict(saved)
    assert again.state_dict() == scaler.state_dict()


def test_a_run_with_a_gradient_scaler_resumes_bit_identically(tmp_path, monkeypatch) -> None:
    """The scaled step on the CPU (a CPU GradScaler stands in for fp16's CUDA one): a scale grown
    each step until the gradients overflow, then halved (skipped steps), so the weights depend on
    the scaler's state; stopped mid-epoch and resumed, the run ends as the uninterrupted one, and
    its checkpoint holds the scaler's state."""
    monkeypatch.setattr(build_module, "grad_scaler",
                        lambda dtype, device: torch.amp.GradScaler("cpu", init_scale=2.0**120, growth_interval=1))
    cfg = dict(dataset="digits", model=MLP, epochs=2, batch_size=32, threads=1, train_subset=320, val_size=100,
               precision="fp32", clip_grad_norm=1.0)
    whole = tv.train(cfg, run_dir=tmp_path / "whole", quiet=True)
    with monkeypatch.context() as patch:
        stop_after(patch, 10 + 1 + 4)  # step 4 of epoch 2
        assert tv.train(cfg, run_dir=tmp_path / "resumed", quiet=True)["status"] == "interrupted"
    saved = load_state(tmp_path / "resumed" / runs.CHECKPOINT)
    assert saved["format"] == FORMAT and (saved["epoch"], saved["step"]) == (1, 4)
    scale = saved["entries"][0]["scaler"]["scale"]
    assert math.isfinite(scale) and scale < 2.0**120 * 2**14  # it backed off at least once
    resumed = tv.train(cfg, run_dir=tmp_path / "resumed", quiet=True, resume=True)
    assert resumed["status"] == whole["status"] == "completed"
    from test_resume import metrics, weights

    mine, ref = weights(tmp_path / "resumed"), weights(tmp_path / "whole")
    assert all(torch.equal(mine[k], ref[k]) for k in ref)
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "whole")


def test_a_population_with_plateau_and_clipping_continues_bit_identically(tmp_path, digits) -> None:
    """Stopped mid-epoch 3 (member 0's plateau count running, its lr halved after epoch 3) and
    continued from its checkpoint in a freshly built population: every member's plateau state
    and clipping come back, and it ends as the uninterrupted population."""
    from test_population_resume import StopAt, assert_same, build, fit
    from test_population_resume import trained as outcomes

    from tinyvision.checkpoint import restore_checkpoint, save_checkpoint

    cfgs = configs({"model": MLP, **SGD, "schedule": "plateau", "plateau_patience": 1, "gamma": 0.5, "epochs": 4},
                   [{"seed": 0, "lr": 0.05, "min_delta": 100.0, "restore_best": False, "clip_grad_norm": 0.1},
                    {"seed": 1, "lr": 0.02, "clip_grad_norm": 0.05}])
    reference = fit(build(cfgs, digits))
    assert [row["lr"] for row in reference.members[0].history] == [0.05, 0.05, 0.05, 0.025]
    steps = reference.steps_per_epoch()
    pop = fit(build(cfgs, digits), StopAt(2 * (steps + 1) + 5))
    save_checkpoint(tmp_path / "pop.safetensors", pop, ["a", "b"])
    resumed = build(cfgs, digits)
    restore_checkpoint(tmp_path / "pop.safetensors", resumed, ["a", "b"])
    assert resumed.optimizer.schedules.schedulers[0].num_bad_epochs == 1
    assert_same(outcomes(fit(resumed)), outcomes(reference))
