"""Resumes are exact for every kind of model and optimiser, and optimiser state keeps its layout.

The quick variant of the kill test (tests/test_reliability.py kills real processes): in one process,
a run is stopped at a step in the middle of an epoch, as Ctrl-C stops it (checkpoint at that step),
then resumed with `train(resume=True)`; weights, metrics and test results must be bit-identical to
an uninterrupted run. CNNs train channels_last, so their optimiser state must come back from the
checkpoint channels_last too: the fused CPU kernels silently update the wrong elements otherwise.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import tinyvision as tv
from tinyvision import runs, stopping
from tinyvision.files import load_state, load_weights, save_state
from tinyvision.config import make_config
from tinyvision._fused import FusedStep
from tinyvision.optim import build_optimizer, check_state_layout

BASE = dict(dataset="digits", epochs=3, batch_size=32, seed=5, threads=1, train_subset=480, val_size=200)

# model x optimiser x precision, with schedules, augmentation and dropout drawing random numbers
CASES = {
    "mlp-adam-fp32-onecycle": dict(model="digits-mlp", optimizer="adam", precision="fp32",
                                   schedule="onecycle", augment="translate", dropout=0.2),
    "cnn-sgd-momentum-bf16-cosine": dict(model="cnn:8-16/k3/fc32", optimizer="sgd", momentum=0.9, lr=0.02,
                                         precision="bf16", schedule="cosine", augment="translate"),
    "cnn-sgd-nesterov-fp32-step": dict(model="cnn:8-16/k3/bn/fc32", optimizer="sgd", momentum=0.9,
                                       nesterov=True, lr=0.02, precision="fp32", schedule="step",
                                       step_size=1, gamma=0.5),
    "cnn-adam-fp32-onecycle": dict(model="cnn:8-16/k3/bn/fc32/drop0.2", optimizer="adam", precision="fp32",
                                   schedule="onecycle", augment="translate"),
    "cnn-adamw-bf16-exponential": dict(model="cnn:8-16/k3/fc32", optimizer="adamw", weight_decay=0.05,
                                       precision="bf16", schedule="exponential"),
    "cnn-adamax-fp32": dict(model="cnn:8-16/k3/fc32", optimizer="adamax", lr=2e-3, precision="fp32",
                            augment="translate"),
    # never better after epoch 1 (min_delta 100): the lr halves after epoch 3, after the resume; clipped
    "mlp-sgd-fp32-plateau-clip": dict(model="digits-mlp", optimizer="sgd", momentum=0.9, lr=0.05, precision="fp32",
                                      schedule="plateau", plateau_patience=1, gamma=0.5, min_delta=100.0,
                                      restore_best=False, clip_grad_norm=0.1, epochs=4),
}


def stop_after(monkeypatch: pytest.MonkeyPatch, polls: int) -> None:
    """The run's stop flag reads as set from its `polls`-th poll on (the loop polls after each step)."""
    count = {"n": 0}

    def requested(self) -> bool:
        count["n"] += 1
        return count["n"] >= polls

    monkeypatch.setattr(stopping.StopRequest, "requested", property(requested))


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_weights(run_dir / runs.WEIGHTS)[0]


def metrics(run_dir) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "val_seconds")}
            for row in runs.read_metrics(run_dir)]


QUICK = {"mlp-adam-fp32-onecycle", "cnn-adam-fp32-onecycle", "mlp-sgd-fp32-plateau-clip"}  # the rest: full suite


@pytest.mark.parametrize("case", [c if c in QUICK else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_stopped_mid_epoch_then_resumed_is_bit_identical(tmp_path, monkeypatch, case) -> None:
    cfg = {**BASE, **CASES[case]}
    whole = tv.train(cfg, run_dir=tmp_path / "whole", quiet=True)
    steps_per_epoch = -(-BASE["train_subset"] // BASE["batch_size"])
    with monkeypatch.context() as patch:
        stop_after(patch, steps_per_epoch + 1 + 6)  # step 6 of epoch 2 (one more poll at epoch end)
        stopped = tv.train(cfg, run_dir=tmp_path / "resumed", quiet=True)
    assert stopped["status"] == "interrupted"
    saved = load_state(tmp_path / "resumed" / runs.CHECKPOINT)
    assert (saved["epoch"], saved["step"]) == (1, 6)
    resumed = tv.train(cfg, run_dir=tmp_path / "resumed", quiet=True, resume=True)
    assert resumed["status"] == whole["status"] == "completed"
    mine, ref = weights(tmp_path / "resumed"), weights(tmp_path / "whole")
    assert all(torch.equal(mine[k], ref[k]) for k in ref), case
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "whole")
    assert {**resumed["test"], "seconds": 0} == {**whole["test"], "seconds": 0}
    if cfg.get("schedule") == "plateau":  # the reduction the checkpoint's scheduler state led to
        assert [row["lr"] for row in metrics(tmp_path / "resumed")] == [0.05, 0.05, 0.05, 0.025]


# --- the kernel behaviour the resume depends on ---------------------------------------------------

OPTIMIZERS = {"sgd": dict(optimizer="sgd", momentum=0.9, lr=0.05), "adam": dict(optimizer="adam", lr=0.01),
              "adamw": dict(optimizer="adamw", lr=0.01, weight_decay=0.1)}
FOR_LOOP = {"sgd": lambda p, c: torch.optim.SGD(p, lr=c["lr"], momentum=0.9, foreach=False),
            "adam": lambda p, c: torch.optim.Adam(p, lr=c["lr"], foreach=False),
            "adamw": lambda p, c: torch.optim.AdamW(p, lr=c["lr"], weight_decay=0.1, foreach=False)}


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(4, 16, 3).to(memory_format=torch.channels_last)


def grads(step: int, net: nn.Module) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return [torch.randn(p.shape, generator=gen).to(memory_format=torch.channels_last) if p.dim() == 4
            else torch.randn(p.shape, generator=gen) for p in net.parameters()]


def take_step(net: nn.Module, step, k: int) -> None:
    for p, g in zip(net.parameters(), grads(k, net)):
        p.grad = g
    step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fused_step_after_a_checkpoint_round_trip_equals_the_for_loop_optimizer(tmp_path, name) -> None:
    cfg = make_config(**OPTIMIZERS[name])
    fused_net, loop_net = conv_net(), conv_net()
    fused = build_optimizer(fused_net, cfg)  # fused kernels on the CPU for sgd/adam/adamw
    loop = FOR_LOOP[name](list(loop_net.parameters()), OPTIMIZERS[name])
    assert fused.param_groups[0]["fused"]
    for k in range(3):
        take_step(fused_net, fused.step, k)
        take_step(loop_net, loop.step, k)
    save_state(tmp_path / "state", {"model": fused_net.state_dict(), "optimizer": fused.state_dict()})
    saved = load_state(tmp_path / "state")
    assert all(t.is_contiguous() for t in saved["model"].values())  # files hold plain contiguous tensors

    restored_net = conv_net()
    restored_net.load_state_dict(saved["model"])
    restored = build_optimizer(restored_net, cfg)
    restored.load_state_dict(saved["optimizer"])
    weight = restored_net.weight
    for key, value in restored.state[weight].items():  # the state follows its parameter's layout
        if value.dim():
            assert value.stride() == weight.stride() and value.is_contiguous(memory_format=torch.channels_last), key
    step = FusedStep(restored)
    for k in range(3, 6):
        take_step(restored_net, step, k)
        take_step(loop_net, loop.step, k)
    for mine, ref in zip(restored_net.parameters(), loop_net.parameters()):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)


def test_a_fused_step_refuses_state_in_another_layout() -> None:
    net = conv_net()
    optimizer = build_optimizer(net, make_config(optimizer="adam"))
    take_step(net, optimizer.step, 0)
    state = optimizer.state[net.weight]
    state["exp_avg"] = state["exp_avg"].contiguous()  # what a plain load_state_dict leaves
    with pytest.raises(RuntimeError, match="exp_avg.*strides"):
        check_state_layout(optimizer)
    plain = torch.optim.Adam(net.parameters(), fused=True)  # not built by tinyvision: no load hook
    plain.load_state_dict(optimizer.state_dict())
    plain.state[net.weight]["exp_avg"] = plain.state[net.weight]["exp_avg"].contiguous()
    with pytest.raises(RuntimeError, match="strides"):
        take_step(net, FusedStep(plain), 1)
