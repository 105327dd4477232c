"""Names -> optimisers, learning-rate schedules and weight-initialisation schemes."""
from __future__ import annotations

from typing import Iterable, Iterator, Optional

import torch
from torch import nn

from .config import RunConfig
from .errors import ConfigError

# Schedules stepped after every batch; the others are stepped once per epoch (plateau with the
# epoch's validation NLL: step_scheduler).
PER_STEP_SCHEDULES = {"cosine", "onecycle"}
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s: grads *= min(1, max_norm / (norm + CLIP_EPS))


FUSED_ON_CPU = {"sgd", "adam", "adamw"}  # fused CPU kernels (torch >= 2.4) measure fastest here


def build_optimizer(model: nn.Module | Iterable[torch.Tensor], cfg: RunConfig, *,
                    fused: bool = False) -> torch.optim.Optimizer:
    """The config's optimiser over a model's parameters (or given tensors). fused=True asks for
    fused kernels (CUDA); on the CPU sgd, adam and adamw use their fused kernels anyway: one pass
    over each parameter per step, measured faster than foreach (benchmarks/README.md). The others
    use foreach (one multi-tensor op per step)."""
    params = model.parameters() if isinstance(model, nn.Module) else model
    optimizer = _make_optimizer([p for p in params if p.requires_grad], cfg, fused=fused)
    # every load of its state (resume, DDP relaunch, tuning) gives the state its parameters' layout
    optimizer.register_load_state_dict_post_hook(match_state_layout)
    return optimizer


def _make_optimizer(params: list[nn.Parameter], cfg: RunConfig, *, fused: bool) -> torch.optim.Optimizer:
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


def _layout_mismatches(optimizer: torch.optim.Optimizer) -> Iterator[tuple[nn.Parameter, str, torch.Tensor]]:
    """(parameter, state key, tensor) for each per-parameter state tensor whose strides differ from
    its parameter's (a scalar such as Adam's step is not per-parameter)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    yield p, key, value


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every state tensor its parameter's memory format (strides), in place in optimizer.state.

    Optimizer.load_state_dict restores dtype and device but not memory format: a checkpoint's
    tensors come back contiguous while a CNN's parameters are channels_last. The fused CPU kernels
    (torch's private fused Adam and SGD) assume a parameter and its state share strides and otherwise
    update the wrong elements, silently (torch issue 126585).
    """
    for p, key, value in list(_layout_mismatches(optimizer)):
        optimizer.state[p][key] = torch.empty_strided(p.shape, p.stride(), dtype=value.dtype,
                                                      device=value.device).copy_(value)


def check_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Refuse to step a fused optimizer whose state does not share its parameters' strides."""
    for p, key, value in _layout_mismatches(optimizer):
        raise RuntimeError(f"optimizer state {key!r} has strides {value.stride()} but its parameter "
                           f"{tuple(p.shape)} has {p.stride()}: a fused step would update the wrong "
                           "elements (call optim.match_state_layout after loading a state dict)")


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
        # plain SGD (momentum 0) stays plain: one-cycle would otherwise cycle a momentum of 0.85-0.95 in
        return lr_sched.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps,
                                   pct_start=0.25, anneal_strategy="linear",
                                   cycle_momentum=not (cfg.optimizer == "sgd" and cfg.momentum == 0))
    if cfg.schedule == "plateau":
        return plateau_scheduler(optimizer, cfg)
    return None


def plateau_scheduler(optimizer: torch.optim.Optimizer,
                      cfg: RunConfig) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """torch's ReduceLROnPlateau on the validation NLL, stepped once per epoch with it. An epoch
    improves on the best as early stopping decides it (lower than the best so far minus min_delta:
    threshold min_delta, absolute); torch counts patience: plateau_patience epochs in a row without
    improvement are waited out, the next one multiplies the lr by gamma (then the count restarts)."""
    if cfg.gamma >= 1.0:
        raise ConfigError("config field 'gamma': schedule plateau multiplies the lr by gamma on a plateau; "
                          "give gamma < 1 (0.1-0.5 is usual)")
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.gamma,
                                                      patience=cfg.plateau_patience, threshold=cfg.min_delta,
                                                      threshold_mode="abs")


def step_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, val_loss: Optional[float] = None) -> None:
    """One step of a schedule: a plateau schedule's with the epoch's validation NLL (a non-finite
    one counts as no improvement), any other's as it is."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if val_loss is None:
            raise ValueError("schedule plateau steps with the epoch's validation loss")
        scheduler.step(val_loss)
    else:
        scheduler.step()


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

