"""Per-member optimiser steps over stacked parameters, and each member's schedule.

Each member is stepped with its own learning rate, weight decay, momentum and betas: by torch's
fused kernel on its slice of each stacked parameter (dimension 0, member-major), or, without those
kernels, by multi-tensor ops with [K] values broadcast over the member dimension. The values come
from a torch optimiser and scheduler built
for each member exactly as its single run builds them (optim.build_optimizer / build_scheduler) on
a stand-in parameter: the same learning rates bit for bit, one-cycle's momentum cycling included.
A member that has stopped gets lr 0 (and no weight decay): its weights no longer change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from ..config import RunConfig
from ..optim import PER_STEP_SCHEDULES, build_optimizer, build_scheduler
from . import _kernels

OPTIMIZERS = ("sgd", "adam", "adamw")  # the updates written out below


class MemberSchedules:
    """Each member's torch optimiser (never given gradients) and scheduler: the source of its
    current hyper-parameters."""

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

    def step(self, per_step: bool, active: Sequence[bool]) -> None:
        """Advance the active members' schedules that step per batch (per_step=True) or per epoch
        (a stopped member's stays where its run ended, as in its checkpoint)."""
        if per_step != self.per_step:
            return
        for scheduler, on in zip(self.schedulers, active):
            if scheduler is not None and on:
                scheduler.step()

    def state_dict(self) -> dict[str, list[dict]]:
        return {"optimizers": [o.state_dict() for o in self.optimizers],
                "schedulers": [s.state_dict() if s is not None else {} for s in self.schedulers]}

    def load_state_dict(self, state: dict[str, list[dict]]) -> None:
        for optimizer, kept in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(kept)  # the current lr, momentum, betas
        for scheduler, kept in zip(self.schedulers, state["schedulers"], strict=True):
            if scheduler is not None:
                scheduler.load_state_dict(kept)


@dataclass
class Hyper:
    """One step's hyper-parameters per member, [K] float64 tensors on the CPU."""

    lr: torch.Tensor
    weight_decay: torch.Tensor
    momentum: torch.Tensor  # SGD; zeros for Adam
    beta1: torch.Tensor  # Adam; zeros for SGD
    beta2: float
    eps: float


def hyper_of(groups: list[dict], active: Sequence[bool]) -> Hyper:
    """Hyper-parameters from each member's param group; inactive members get lr 0 and no decay."""
    def column(key: str) -> torch.Tensor:
        return torch.tensor([float(g.get(key, 0.0)) for g in groups], dtype=torch.float64)

    keep = torch.tensor(list(active), dtype=torch.float64)
    betas = [g.get("betas", (0.0, 0.0)) for g in groups]
    return Hyper(lr=column("lr") * keep, weight_decay=column("weight_decay") * keep, momentum=column("momentum"),
                 beta1=torch.tensor([b[0] for b in betas], dtype=torch.float64), beta2=float(betas[0][1]),
                 eps=float(groups[0].get("eps", 0.0)))


class MemberOptimizer:
    """SGD (momentum, Nesterov), Adam or AdamW over stacked parameters, per-member hyper-parameters
    (each member's param group: MemberSchedules.groups()).

    Where torch's fused kernels exist (_kernels.py), each active member's slice is stepped by the
    kernel its single run uses: bit-identical to it. Elsewhere the update is written as multi-tensor
    (_foreach) ops over all members at once with [K] hyper-parameters (lr 0 for inactive members):
    equal within fp32 rounding. A stopped member's slice is never touched by the kernels."""

    def __init__(self, params: Sequence[nn.Parameter], members: int, kind: str, nesterov: bool = False,
                 fused: Optional[bool] = None) -> None:
        if kind not in OPTIMIZERS:
            raise ValueError(f"population optimiser {kind!r}: only {', '.join(OPTIMIZERS)}")
        self.params, self.members, self.kind, self.nesterov = list(params), members, kind, nesterov
        self.fused = _kernels.usable(self.params[0].device) if fused is None else fused
        names = ("momentum_buffer",) if kind == "sgd" else ("exp_avg", "exp_avg_sq")
        # zeros_like keeps each parameter's strides (channels_last), as the kernels require
        self.buffers = {name: [torch.zeros_like(p) for p in self.params] for name in names}
        self.step_counts = torch.zeros(members, dtype=torch.float32, device=self.params[0].device)
        self.steps = 0  # population steps (the multi-tensor path's bias correction)
        self.started = [False] * members  # SGD: a member's first step sets its momentum buffer
        self.counts = [0] * members  # Adam: step_counts as Python ints (grouping members needs no host read)
        self._key: Optional[tuple] = None
        self._views: Optional[dict[str, list[list[torch.Tensor]]]] = None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"buffers": self.buffers, "step_counts": self.step_counts, "steps": self.steps,
                "started": self.started}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Copied in place: the members' views of the buffers stay valid."""
        for name, buffers in self.buffers.items():
            for live, kept in zip(buffers, state["buffers"][name], strict=True):
                live.copy_(kept)
        self.step_counts.copy_(state["step_counts"])
        self.counts = [int(c) for c in self.step_counts.tolist()]
        self.steps, self.started, self._key = int(state["steps"]), list(state["started"]), None

    def member_state(self, k: int, group: dict) -> Optional[list[dict[str, torch.Tensor]]]:
        """Member k's optimiser state per parameter, as torch's optimiser would hold it for its single
        run (group: its param group); None on the multi-tensor path, which also moves the buffers
        of stopped members (lr 0, but their averages go on)."""
        if not self.fused:
            return None
        buffers = {name: self._by_member(b)[k] for name, b in self.buffers.items()}
        if self.kind == "sgd":
            keep = self.started[k] and float(group["momentum"]) != 0.0
            return [{"momentum_buffer": buf.clone()} if keep else {} for buf in buffers["momentum_buffer"]]
        if not self.counts[k]:  # no step taken: torch's state is still empty
            return [{} for _ in self.params]
        return [{"step": self.step_counts[k].clone(), "exp_avg": avg.clone(), "exp_avg_sq": sq.clone()}
                for avg, sq in zip(buffers["exp_avg"], buffers["exp_avg_sq"])]

    def _by_member(self, tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """[member][parameter]: each member's rows of each stacked tensor (dimension 0 is member-major)."""
        split = [t.split(p.shape[0] // self.members) for t, p in zip(tensors, self.params)]
        return [list(rows) for rows in zip(*split)]

    @torch.no_grad()
    def step(self, groups: list[dict], active: Sequence[bool]) -> None:
        """One step of every active member with its group's current values."""
        self.steps += 1
        grads = [p.grad for p in self.params]
        if self.fused:
            self._fused_step(grads, groups, active)
            return
        key = (tuple(active), *((g["lr"], g["weight_decay"], g.get("momentum"), g.get("betas")) for g in groups))
        if key != self._key:  # expanded only when a value changed, not every step
            self._expand(hyper_of(groups, active))
            self._key = key
        (self._sgd if self.kind == "sgd" else self._adam)(grads)

    def _fused_step(self, grads: list[torch.Tensor], groups: list[dict], active: Sequence[bool]) -> None:
        """Each active member's slices stepped by the kernel its single run uses; members whose step
        is the same (hyper-parameters, Adam's step count, SGD's first step) share one kernel call
        over all their slices (elementwise: the same bits as a call per member, less dispatch)."""
        if self._views is None:  # the parameters' and buffers' member slices, made once
            self._views = {"params": self._by_member(self.params),
                           **{name: self._by_member(b) for name, b in self.buffers.items()},
                           "steps": [[count] * len(self.params) for count in self.step_counts.unbind()]}
        views, member_grads = self._views, self._by_member(grads)
        for members in self._kernel_batches(groups, active):
            def joined(name: str) -> list[torch.Tensor]:
                source = member_grads if name == "grads" else views[name]
                return [t for k in members for t in source[k]]

            group = groups[members[0]]
            if self.kind == "sgd":
                _kernels.sgd(joined("params"), joined("grads"), joined("momentum_buffer"), group,
                             first=not self.started[members[0]])
                for k in members:
                    self.started[k] = True
                continue
            if len(members) == self.members:
                self.step_counts += 1
            else:
                for k in members:
                    self.step_counts[k] += 1
            for k in members:
                self.counts[k] += 1
            _kernels.adam(self.kind, joined("params"), joined("grads"), joined("exp_avg"), joined("exp_avg_sq"),
                          joined("steps"), group)

    def _kernel_batches(self, groups: list[dict], active: Sequence[bool]) -> list[list[int]]:
        """The active members in batches that one kernel call can step: equal hyper-parameters and
        the same step (SGD: first or not; Adam: the count its bias correction reads)."""
        batches: dict[tuple, list[int]] = {}
        for k in (k for k in range(self.members) if active[k]):
            g = groups[k]
            place = self.started[k] if self.kind == "sgd" else self.counts[k]
            key = (place, float(g["lr"]), float(g["weight_decay"]), float(g.get("momentum", 0.0)),
                   float(g.get("dampening", 0.0)), tuple(g.get("betas", ())), float(g.get("eps", 0.0)))
            batches.setdefault(key, []).append(k)
        return list(batches.values())

    # -- the multi-tensor path ----------------------------------------------------------------

    def _per_param(self, values: torch.Tensor) -> list[torch.Tensor]:
        """A [K] tensor as one broadcastable tensor per parameter: [K*rows, 1, ...] in its dtype."""
        out = []
        for p in self.params:
            rows = p.shape[0] // self.members
            v = values.to(device=p.device, dtype=p.dtype).repeat_interleave(rows)
            out.append(v.view(-1, *([1] * (p.dim() - 1))))
        return out

    def _expand(self, hyper: Hyper) -> None:
        self.hyper = hyper
        expand = self._per_param
        self.lr, self.wd = expand(hyper.lr), expand(hyper.weight_decay)
        self.momentum, self.keep1 = expand(hyper.momentum), expand(1.0 - hyper.beta1)
        self.shrink = expand(1.0 - hyper.lr * hyper.weight_decay)  # AdamW's decoupled decay
        self.decay, self.uses_momentum = bool(hyper.weight_decay.any()), bool(hyper.momentum.any())
        self.one_beta1 = bool((hyper.beta1 == hyper.beta1[0]).all())

    def _sgd(self, grads: list[torch.Tensor]) -> None:
        if self.decay:  # L2: grad + wd * p
            grads = torch._foreach_addcmul(grads, self.params, self.wd)
        if self.uses_momentum:
            buf = self.buffers["momentum_buffer"]
            if self.steps == 1:
                torch._foreach_copy_(buf, grads)
            else:
                torch._foreach_mul_(buf, self.momentum)
                torch._foreach_add_(buf, grads)
            grads = torch._foreach_addcmul(grads, buf, self.momentum) if self.nesterov else buf
        torch._foreach_sub_(self.params, torch._foreach_mul(grads, self.lr))

    def _step_size(self) -> list[torch.Tensor]:
        """lr / (1 - beta1^t) per parameter (one-cycle moves beta1 per member, else it is one number)."""
        h = self.hyper
        if self.one_beta1:
            return torch._foreach_div(self.lr, 1.0 - float(h.beta1[0]) ** self.steps)
        return self._per_param(h.lr / (1.0 - h.beta1 ** self.steps))

    def _adam(self, grads: list[torch.Tensor]) -> None:
        h = self.hyper
        if self.decay and self.kind == "adamw":
            torch._foreach_mul_(self.params, self.shrink)  # p * (1 - lr * wd)
        elif self.decay:
            grads = torch._foreach_addcmul(grads, self.params, self.wd)
        exp_avg, exp_avg_sq = self.buffers["exp_avg"], self.buffers["exp_avg_sq"]
        torch._foreach_lerp_(exp_avg, grads, self.keep1)
        torch._foreach_mul_(exp_avg_sq, h.beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1.0 - h.beta2)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1.0 - h.beta2 ** self.steps))
        torch._foreach_add_(denom, h.eps)
        update = torch._foreach_div(exp_avg, denom)
        torch._foreach_mul_(update, self._step_size())
        torch._foreach_sub_(self.params, update)
