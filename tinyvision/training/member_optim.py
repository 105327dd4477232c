"""K runs' optimiser steps over stacked parameters (leading member dimension): torch.optim does the
update; this module adds what one torch optimiser cannot give, each member its own learning rate
and weight decay (an lr sweep, a stopped member at lr 0). It is the only update written by hand,
tested against torch.optim stepping each member alone (tests/test_stacked.py).

How: every update torch offers here (SGD with momentum or Nesterov, Adam, AdamW, Adamax,
Adadelta) is elementwise and linear in the learning rate, and its state (momentum buffer, moments)
does not depend on it. So the torch optimiser steps every member at lr 1 without weight decay,
and member k's change is scaled by its lr: p_k + lr_k (p_k' - p_k) = p_k - lr_k u_k, what torch
gives at lr_k. L2 decay (SGD, Adam, Adamax, Adadelta) is added to the gradient per member first,
AdamW's decoupled decay multiplies the parameters by 1 - lr_k wd_k first, as torch does. When
every member is active with one lr and decay (seeds of one config) torch steps them at that lr
directly: no copy, no scaling. The values come from each member's own torch optimiser and
scheduler (MemberSchedules), built exactly as its single run builds them (one-cycle's momentum
cycling included), so a member's lr follows its run's bit for bit; a plateau schedule steps with
its member's own validation NLL, so members' rates part where their losses do.

Gradient clipping (clip_grad_norm, per member) is torch.nn.utils.clip_grad_norm_'s arithmetic per
member: member k's norm is the 2-norm of its rows of every stacked gradient (each row's norm, then
the norm of those), and its rows are multiplied by min(1, max_norm_k / (norm_k + 1e-6)).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..config import RunConfig
from .._fused import FusedStep
from ..optim import CLIP_EPS, PER_STEP_SCHEDULES, build_optimizer, build_scheduler, step_scheduler

SHARED_KEYS = ("momentum", "betas", "rho", "eps", "dampening", "nesterov")  # a schedule may move these; members share them


class MemberSchedules:
    """Each member's torch optimiser (never given gradients) and scheduler: the source of its
    current hyper-parameters, and of its optimiser and scheduler state in a checkpoint."""

    def __init__(self, cfgs: Sequence[RunConfig], steps_per_epoch: int) -> None:
        self.per_step = cfgs[0].schedule in PER_STEP_SCHEDULES
        self.optimizers, self.schedulers = [], []
        for cfg in cfgs:
            stand_in = nn.ParameterList([nn.Parameter(torch.zeros(1))])  # no RNG drawn (unlike nn.Linear)
            optimizer = build_optimizer(stand_in, cfg)
            self.optimizers.append(optimizer)
            self.schedulers.append(build_scheduler(optimizer, cfg, steps_per_epoch))
            optimizer.step()  # no gradients: changes nothing, but a scheduler's step must follow one (torch warns)

    def groups(self) -> list[dict]:
        return [optimizer.param_groups[0] for optimizer in self.optimizers]

    def lrs(self) -> list[float]:
        return [float(group["lr"]) for group in self.groups()]

    def step(self, per_step: bool, active: Sequence[bool], val_losses: Optional[Sequence[float]] = None) -> None:
        """Advance the active members' schedules that step per batch (per_step=True) or per epoch
        (a plateau schedule with its member's validation loss; a stopped member's schedule stays
        where its run ended, as in its checkpoint)."""
        if per_step != self.per_step:
            return
        for k, (scheduler, on) in enumerate(zip(self.schedulers, active)):
            if scheduler is not None and on:
                step_scheduler(scheduler, val_losses[k] if val_losses else None)


class MemberOptimizer:
    """torch.optim over stacked leaves (dimension 0: the member) with a learning rate and weight
    decay per member; a member that is not active is left exactly as it is."""

    def __init__(self, leaves: Sequence[torch.Tensor], cfgs: Sequence[RunConfig], steps_per_epoch: int) -> None:
        self.leaves, self.members = list(leaves), len(cfgs)
        self.schedules = MemberSchedules(cfgs, steps_per_epoch)
        device = self.leaves[0].device
        self.optimizer = build_optimizer(self.leaves, cfgs[0], fused=device.type == "cuda")
        self.step_fn = FusedStep(self.optimizer)  # optimizer.step(), bit for bit, less its per-call Python
        self.decoupled = cfgs[0].optimizer == "adamw"
        limits = [cfg.clip_grad_norm for cfg in cfgs]
        self.clip: Optional[tuple[torch.Tensor, Optional[torch.Tensor]]] = None  # None: no member clips
        if any(limit is not None for limit in limits):
            max_norm = torch.tensor([limit if limit is not None else math.inf for limit in limits], device=device)
            unclipped = None if all(limit is not None for limit in limits) else max_norm.isinf()
            self.clip = (max_norm, unclipped)

    def zero_grad(self) -> None:
        self.step_fn.zero_grad()

    @torch.no_grad()
    def step(self, active: Sequence[bool]) -> None:
        if self.clip is not None:
            clip_members([p.grad for p in self.leaves if p.grad is not None], *self.clip)
        groups = self.schedules.groups()
        group = self.optimizer.param_groups[0]
        for key in SHARED_KEYS:
            if key in group:
                group[key] = groups[0][key]
        lrs = [float(g["lr"]) if on else 0.0 for g, on in zip(groups, active)]
        decays = [float(g["weight_decay"]) if on else 0.0 for g, on in zip(groups, active)]
        if all(active) and len(set(lrs)) == 1 and len(set(decays)) == 1:
            group["lr"], group["weight_decay"] = lrs[0], decays[0]
            self.step_fn()
            return
        group["lr"], group["weight_decay"] = 1.0, 0.0
        lr = torch.tensor(lrs, dtype=torch.float64)
        if any(decays):
            decay = torch.tensor(decays, dtype=torch.float64)
            for p in self.leaves:
                if self.decoupled:
                    p.mul_(_per_member(1.0 - lr * decay, p))
                elif p.grad is not None:
                    p.grad.add_(p * _per_member(decay, p))
        before = [p.clone() for p in self.leaves]
        self.step_fn()
        keep = torch.tensor(list(active))
        for p, old in zip(self.leaves, before):
            moved = old.add(p.sub(old).mul_(_per_member(lr, p)))
            p.copy_(torch.where(_per_member(keep, p), moved, old))  # a stopped member: as it was (even if NaN)

    # -- one member's state, as its own torch optimiser and scheduler would hold it ----------------

    def member_state(self, k: int) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
        """(member k's optimizer.state_dict() for its single model, its scheduler's state_dict())."""
        state = {}
        for i, p in enumerate(self.leaves):
            kept = self.optimizer.state.get(p, {})
            if kept:
                state[i] = {key: _member_slice(v, p, k) for key, v in kept.items()}
        group = {key: value for key, value in self.schedules.groups()[k].items() if key != "params"}
        scheduler = self.schedules.schedulers[k]
        return ({"state": state, "param_groups": [{**group, "params": list(range(len(self.leaves)))}]},
                scheduler.state_dict() if scheduler is not None else None)

    def load_members(self, optimizers: Sequence[dict[str, Any]], schedulers: Sequence[Optional[dict[str, Any]]],
                     active: Sequence[bool]) -> None:
        """Every member's optimiser and scheduler state (as member_state gives them) restacked; the
        per-parameter step counts, one per stacked tensor, come from an active member."""
        for stand_in, saved in zip(self.schedules.optimizers, optimizers, strict=True):
            group = {key: value for key, value in saved["param_groups"][0].items() if key != "params"}
            stand_in.load_state_dict({"state": {}, "param_groups": [{**group, "params": [0]}]})
        for scheduler, saved in zip(self.schedules.schedulers, schedulers, strict=True):
            if scheduler is not None and saved is not None:
                scheduler.load_state_dict(saved)
        source = next((k for k, on in enumerate(active) if on), 0)
        state = {}
        for i, p in enumerate(self.leaves):
            keys = optimizers[source]["state"].get(i) or optimizers[source]["state"].get(str(i)) or {}
            state[i] = {key: _restacked([_entry(o, i).get(key) for o in optimizers], value, p)
                        for key, value in keys.items()}
        group = {key: value for key, value in self.optimizer.param_groups[0].items() if key != "params"}
        self.optimizer.load_state_dict({"state": {i: s for i, s in state.items() if s},
                                        "param_groups": [{**group, "params": list(range(len(self.leaves)))}]})


def clip_members(grads: Sequence[torch.Tensor], max_norm: torch.Tensor,
                 unclipped: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scale each member's rows of the stacked gradients (dimension 0: the member) in place as
    torch.nn.utils.clip_grad_norm_ scales one run's gradients: by min(1, max_norm[k] / (norm[k] +
    1e-6)), norm[k] the 2-norm over every gradient's row k. `unclipped` [K] (bool): members left
    exactly as they are. Returns the norms [K] (before clipping)."""
    if not grads:
        return max_norm.new_zeros(max_norm.shape)
    rows = [torch.linalg.vector_norm(g, 2, dim=tuple(range(1, g.dim()))) if g.dim() > 1 else g.abs()
            for g in grads]  # each gradient's norm per member: [K] each
    norms = torch.linalg.vector_norm(torch.stack(rows), 2, dim=0)  # [K]
    # max_norm / (norm + eps) as torch computes a float over a tensor (reciprocal, times): bit for bit
    coef = torch.clamp((norms + CLIP_EPS).reciprocal() * max_norm.to(norms.dtype), max=1.0)
    if unclipped is not None:
        coef = torch.where(unclipped, torch.ones_like(coef), coef)
    for g in grads:
        g.mul_(_per_member(coef, g))
    return norms


def _per_member(values: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A [K] tensor shaped to broadcast over a stacked [K, ...] tensor, in its dtype and device."""
    dtype = p.dtype if values.dtype != torch.bool else torch.bool
    return values.to(device=p.device, dtype=dtype).view(-1, *([1] * (p.dim() - 1)))


def _member_slice(value: Any, p: torch.Tensor, k: int) -> Any:
    """Member k's part of an optimiser state entry: its row of a per-parameter tensor, or the
    entry itself (a step count shared by every member)."""
    if isinstance(value, torch.Tensor) and value.shape == p.shape:
        return value[k].clone()
    return value.clone() if isinstance(value, torch.Tensor) else value


def _entry(saved: dict[str, Any], i: int) -> dict[str, Any]:
    return saved["state"].get(i) or saved["state"].get(str(i)) or {}


def _restacked(values: list[Any], example: Any, p: torch.Tensor) -> Any:
    """Members' entries as one stacked entry (a member with none, never stepped: zeros)."""
    if isinstance(example, torch.Tensor) and example.shape == p.shape[1:]:
        return torch.stack([v if isinstance(v, torch.Tensor) else torch.zeros_like(example) for v in values])
    return example
