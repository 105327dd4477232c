"""Names -> optimisers, learning-rate schedules and weight-initialisation schemes."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.optim.optimizer as _optimizer_module
from torch import nn

from .config import RunConfig

# Schedules stepped after every batch; the others are stepped once per epoch.
PER_STEP_SCHEDULES = {"cosine", "onecycle"}


FUSED_ON_CPU = {"sgd", "adam", "adamw"}  # fused CPU kernels exist (torch >= 2.4) and measure fastest


def build_optimizer(model: nn.Module, cfg: RunConfig, *, fused: bool = False) -> torch.optim.Optimizer:
    """The config's optimiser. fused=True asks for fused kernels (CUDA); on the CPU sgd, adam and
    adamw use their fused kernels anyway: one pass over each parameter per step, measured faster
    than foreach (benchmarks/README.md). The others use foreach (one multi-tensor op per step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    wd = cfg.weight_decay
    on_cpu = all(p.device.type == "cpu" for p in params)
    fast = {"fused": True} if fused or (on_cpu and cfg.optimizer in FUSED_ON_CPU) else {"foreach": True}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=wd, **fast)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd, **fast)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd, **fast)
    if cfg.optimizer == "adamax":
        return torch.optim.Adamax(params, lr=cfg.lr, weight_decay=wd, foreach=True)
    return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=wd, foreach=True)


class FusedStep:
    """optimizer.zero_grad() and optimizer.step() for a fused SGD, Adam or AdamW, without their
    per-call Python: the same fused kernel on the same state tensors, so weights and state_dict()
    are bit-identical to optimizer.step() (tested). On an MLP step of ~0.4 ms that Python was a
    fifth of the time (Adam: 66 us per optimizer.step(), 24 us here; benchmarks/README.md).

    The first step (it creates the state) and any step it cannot take go through optimizer.step():
    a parameter without a gradient, several groups or devices, optimizer-step hooks (the
    optimizer's own or global ones), SGD's momentum switched to or from 0, a state replaced by
    optimizer.load_state_dict(). It passes no gradient scale: not for use with a GradScaler.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.possible = self._kernel_fits()
        self.is_sgd = isinstance(optimizer, torch.optim.SGD)
        decoupled = isinstance(optimizer, torch.optim.AdamW) or optimizer.defaults.get("decoupled_weight_decay")
        self.adam_kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        self.kernel_args: Optional[tuple] = None  # the state lists, once the state exists
        self.state_seen: Optional[dict] = None  # the optimizer.state those lists came from

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def __call__(self) -> None:
        grads = [p.grad for p in self.params]
        if not self._fast_path_holds(grads):
            self.optimizer.step()
            self.kernel_args = self._state_lists() if self.possible else None
            self.state_seen = self.optimizer.state
            return
        with torch.no_grad():  # as optimizer.step(): in-place updates of leaf tensors
            self._fused_kernel(grads)

    def _fast_path_holds(self, grads: list[Optional[torch.Tensor]]) -> bool:
        """What can change between steps (the rest is fixed when the lists are made)."""
        opt = self.optimizer
        if self.kernel_args is None or opt.state is not self.state_seen or any(g is None for g in grads) \
                or opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks \
                or _optimizer_module._global_optimizer_pre_hooks \
                or _optimizer_module._global_optimizer_post_hooks:
            return False
        if self.is_sgd:  # buffers exist iff momentum is on
            return (opt.param_groups[0]["momentum"] != 0) == bool(self.kernel_args[0])
        return True

    def _fused_kernel(self, grads: list[torch.Tensor]) -> None:
        group = self.optimizer.param_groups[0]
        if self.is_sgd:
            torch._fused_sgd_(self.params, grads, self.kernel_args[0], weight_decay=group["weight_decay"],
                              momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"],
                              nesterov=group["nesterov"], maximize=group["maximize"], is_first_step=False,
                              grad_scale=None, found_inf=None)
            return
        exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, step_counts = self.kernel_args
        step_counts.add_(1)  # every parameter's step count: one op (_foreach_add_ is one per tensor here)
        beta1, beta2 = group["betas"]
        self.adam_kernel(self.params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
                         amsgrad=group["amsgrad"], lr=group["lr"], beta1=beta1, beta2=beta2,
                         weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
                         grad_scale=None, found_inf=None)

    def _kernel_fits(self) -> bool:
        """A fused SGD/Adam/AdamW with one group on one device and dtype, plain float settings."""
        opt, groups = self.optimizer, self.optimizer.param_groups
        return type(opt) in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW) and len(groups) == 1 \
            and bool(groups[0].get("fused")) and not groups[0].get("differentiable") \
            and not groups[0].get("capturable") \
            and not any(isinstance(v, torch.Tensor) for k, v in groups[0].items() if k != "params") \
            and len({(p.device, p.dtype) for p in self.params}) == 1

    def _state_lists(self) -> Optional[tuple]:
        """The kernel's state arguments once optimizer.step() has made the state, else None."""
        opt, groups = self.optimizer, self.optimizer.param_groups
        state = [opt.state.get(p, {}) for p in self.params]
        if self.is_sgd:
            buffers = [s.get("momentum_buffer") for s in state] if groups[0]["momentum"] != 0 else []
            return (buffers,) if all(b is not None for b in buffers) else None
        if not all(state):
            return None
        max_sqs = [s["max_exp_avg_sq"] for s in state] if groups[0]["amsgrad"] else []
        step_counts = torch.stack([s["step"] for s in state])  # the same values, in one tensor
        for s, count in zip(state, step_counts.unbind()):
            s["step"] = count  # a view of it: state_dict() and the kernel read the shared counts
        return ([s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state], max_sqs,
                [s["step"] for s in state], step_counts)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig,
                    steps_per_epoch: int) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
    """None for a constant rate; see PER_STEP_SCHEDULES for when each one is stepped."""
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    lr_sched = torch.optim.lr_scheduler
    if cfg.schedule == "exponential":
        return lr_sched.ExponentialLR(optimizer, gamma=cfg.gamma)
    if cfg.schedule == "step":
        return lr_sched.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return lr_sched.CosineAnnealingLR(optimizer, T_max=total_steps)
    if cfg.schedule == "onecycle":
        return lr_sched.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps,
                                   pct_start=0.25, anneal_strategy="linear")
    return None


def init_weights(model: nn.Module, scheme: str) -> None:
    """Re-initialise conv and linear weights; biases to zero. 'default' keeps PyTorch's init."""
    if scheme == "default":
        return
    for module in model.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "xavier":
            nn.init.xavier_uniform_(module.weight)
        elif scheme == "kaiming":
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif scheme == "normal":
            nn.init.normal_(module.weight, std=0.01)
        else:
            raise ValueError(f"unknown init scheme {scheme!r}")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def is_finite(value: float) -> bool:
    return math.isfinite(value)
