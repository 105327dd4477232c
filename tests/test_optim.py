"""FusedStep: the training loop's optimiser step is optimizer.step(), bit for bit."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from tinyvision.config import make_config
from tinyvision._fused import FusedStep
from tinyvision.optim import build_optimizer, build_scheduler

CASES = {
    "sgd": dict(optimizer="sgd", momentum=0.9),
    "sgd-nesterov-wd": dict(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd-no-momentum": dict(optimizer="sgd", momentum=0.0, schedule="cosine"),  # onecycle would set momentum
    "adam": dict(optimizer="adam"),
    "adam-wd": dict(optimizer="adam", weight_decay=1e-3),
    "adamw": dict(optimizer="adamw", weight_decay=0.05),
}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def _train(net: nn.Module, cfg, steps: int, fused_step: bool) -> tuple[nn.Module, dict]:
    optimizer = build_optimizer(net, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps)  # onecycle also moves momentum / betas
    gen = torch.Generator().manual_seed(1)
    step = FusedStep(optimizer)
    for i in range(steps):
        if i == steps // 2:
            step = FusedStep(optimizer)  # a new epoch: a new one, as train_epoch makes
        x, y = torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        loss = F.cross_entropy(net(x), y)
        if fused_step:
            step.zero_grad()
            loss.backward()
            step()
        else:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return net, optimizer.state_dict()


@pytest.mark.parametrize("case", CASES)
def test_fused_step_is_bit_identical_to_optimizer_step(case: str) -> None:
    cfg = make_config(dataset="digits", model="mlp", lr=0.05 if "sgd" in case else 3e-3,
                      epochs=1, **{"schedule": "onecycle", **CASES[case]})
    net = _net()
    expected, expected_state = _train(copy.deepcopy(net), cfg, 12, fused_step=False)
    got, got_state = _train(net, cfg, 12, fused_step=True)
    for (name, a), b in zip(expected.named_parameters(), got.parameters()):
        assert torch.equal(a, b), name
    assert expected_state["param_groups"] == got_state["param_groups"]
    for key, values in expected_state["state"].items():
        for field, value in values.items():
            assert torch.equal(value, got_state["state"][key][field]), (key, field)


def test_fused_step_takes_the_fast_path_after_the_first_step() -> None:
    net = _net()
    optimizer = build_optimizer(net, make_config(dataset="digits", model="mlp", optimizer="adam"))
    step = FusedStep(optimizer)
    calls = []
    optimizer.register_step_post_hook(lambda *args: calls.append(1))
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    for _ in range(3):
        step.zero_grad()
        F.cross_entropy(net(x), y).backward()
        step()
    assert calls == [1, 1, 1]  # a hook on the optimizer: every step goes through optimizer.step()
    optimizer._optimizer_step_post_hooks.clear()
    step = FusedStep(optimizer)
    for _ in range(3):
        step.zero_grad()
        F.cross_entropy(net(x), y).backward()
        step()
    assert step.kernel_args is not None and int(optimizer.state[next(net.parameters())]["step"]) == 6


def test_a_parameter_without_gradient_falls_back_to_optimizer_step() -> None:
    net = _net()
    optimizer = build_optimizer(net, make_config(dataset="digits", model="mlp", optimizer="adam"))
    step = FusedStep(optimizer)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    for frozen_bias in (False, False, True):
        step.zero_grad()
        F.cross_entropy(net(x), y).backward()
        if frozen_bias:
            net[0].bias.grad = None
        before = net[0].bias.detach().clone()
        step()
    assert torch.equal(net[0].bias, before)  # optimizer.step() skips it, as it always did


def _steps(net: nn.Module, step: FusedStep, n: int, between=lambda i: None) -> None:
    gen = torch.Generator().manual_seed(2)
    for i in range(n):
        between(i)
        x, y = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        step.zero_grad()
        F.cross_entropy(net(x), y).backward()
        step()


class _Plain(FusedStep):
    """The reference: every step through optimizer.step()."""

    def _fast_path_holds(self, grads) -> bool:
        return False


@pytest.mark.parametrize("stepper", [FusedStep, _Plain])
def test_what_changes_between_steps_is_followed(stepper) -> None:
    """SGD momentum switched on and off mid-run, a global step hook, a state replaced by
    load_state_dict: the fused path gives what optimizer.step() gives."""
    results = {}
    for kind in (stepper, _Plain):
        net = _net()
        optimizer = build_optimizer(net, make_config(dataset="digits", model="mlp", optimizer="sgd",
                                                     momentum=0.0, lr=0.05))
        step = kind(optimizer)
        saved = {}
        calls = []

        def between(i: int) -> None:
            group = optimizer.param_groups[0]
            if i == 3:
                group["momentum"] = 0.9  # buffers appear
            if i == 5:
                saved["state"] = copy.deepcopy(optimizer.state_dict())
            if i == 7:
                optimizer.load_state_dict(saved["state"])  # new buffers, as saved at step 5
            if i == 9:
                group["momentum"] = 0.0  # buffers unused
            if i == 10:
                group["momentum"] = 0.9
            if i == 11:
                saved["hook"] = register_optimizer_step_post_hook(
                    lambda *args: calls.append(i))
            if i == 13:
                saved["hook"].remove()

        _steps(net, step, 16, between)
        results[kind] = (net, len(calls))
    (got, got_calls), (expected, expected_calls) = results[stepper], results[_Plain]
    for a, b in zip(got.parameters(), expected.parameters()):
        assert torch.equal(a, b)
    assert got_calls == expected_calls == 2


def test_without_the_private_kernels_every_step_is_optimizer_step(monkeypatch) -> None:
    """Another torch without the private kernels or hook registries: the fallback, still bit-identical."""
    import tinyvision._fused as fused_module

    monkeypatch.setattr(fused_module, "FAST_PATH", False)
    cfg = make_config(dataset="digits", model="mlp", lr=3e-3, epochs=1, optimizer="adam", schedule="onecycle")
    net = _net()
    expected, expected_state = _train(copy.deepcopy(net), cfg, 6, fused_step=False)
    calls = []
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, real=torch.optim.Adam.step: (
        calls.append(1), real(self, *a))[1])
    got, _ = _train(net, cfg, 6, fused_step=True)
    assert len(calls) == 6  # every step went through optimizer.step()
    for a, b in zip(expected.parameters(), got.parameters()):
        assert torch.equal(a, b)
