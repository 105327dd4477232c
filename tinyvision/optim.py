"""Names -> optimisers, learning-rate schedules and weight-initialisation schemes."""
from __future__ import annotations

import math
from typing import Optional

import torch
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
