"""K runs of one architecture stepped as one (a population), for any module torch.func can map.

torch.func.stack_module_state gives every parameter and buffer a leading member dimension: those
stacked tensors are the leaves the optimiser steps (member_optim). torch.func.vmap maps the
module's own forward (functional_call on one copy of it) over the members, with randomness
"different" (each member's own dropout masks) and batch norm statistics per member. Members never
mix, so a NaN in one stays in it. Member k starts from the model its single run builds (same
seed), gets the batches its single run gets (batches.MemberBatches), and its slice is its model:
snapshot(k) is a plain state_dict under the module's own keys.

Batches: one per member ([K, B, ...]), one for all ([B, ...]: members of one seed), or one per
block of members of one seed ([G, B, ...]: a vmap over the blocks of a vmap over their members).
"""
from __future__ import annotations

import time
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..data.loader import DeviceLoader
from ..errors import TinyVisionError
from ..evaluate import Predictions, predict_members
from .batches import MemberBatches
from .layered import LayeredForward, supports as layered_supports
from .loop import Member, State
from .losses import Loss
from .member_optim import MemberOptimizer
from .trainee import TraineeBase

Tensors = dict[str, torch.Tensor]


class Unstackable(TinyVisionError):
    """vmap cannot map this module's forward: its runs train one at a time."""


class StackedModules(TraineeBase):
    """K members of one architecture (`nets`, each built as its run builds it) as one trainee."""

    def __init__(self, members: Sequence[Member], nets: Sequence[nn.Module], batches: MemberBatches,
                 val_loader: DeviceLoader, loss: Loss, dtype: Optional[torch.dtype]) -> None:
        super().__init__(members, batches.device, loss, dtype)
        self.template = nets[0]  # whose forward runs for every member (its own tensors are not used)
        params, buffers = stack_module_state(list(nets))
        self.params: Tensors = dict(params)
        self.buffers: Tensors = dict(buffers)
        self.keys = list(self.template.state_dict())  # what a member's state_dict holds
        self.member_batches, self.val_loader = batches, val_loader
        trainable = [p for p in self.params.values() if p.requires_grad]
        self.optimizer = MemberOptimizer(trainable, [m.cfg for m in members], len(batches))
        # spec models: layer by layer, dense layers as batched matmuls (measured faster: layered.py)
        self.layered = LayeredForward(self.template, len(members)) if layered_supports(self.template) else None
        self._sample_dims = batches.loaders[0].images.dim()  # a shared batch: [B, C, H, W]
        self._final: Optional[tuple[Tensors, Tensors]] = None

    # -- the forward of every member ------------------------------------------------------------

    def _call(self, params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def _forward(self, params: Tensors, buffers: Tensors, x: torch.Tensor,
                 sizes: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Logits [K, B, classes] of x: [K, B, ...] (a batch per member), [B, ...] (one for all), or
        with sizes [G, B, ...] (block g's batch for its sizes[g] members, blocks of one size)."""
        shared = sizes is None and x.dim() == self._sample_dims
        if self.layered is not None:
            return self.layered(params, buffers, x, sizes, shared)
        if sizes is None:
            return vmap(self._call, in_dims=(0, 0, None if shared else 0), randomness="different")(params, buffers, x)
        g, m = len(sizes), sizes[0]
        per_block = vmap(self._call, in_dims=(0, 0, None), randomness="different")
        out = vmap(per_block, in_dims=(0, 0, 0), randomness="different")(
            _blocks(params, g, m), _blocks(buffers, g, m), x)
        return out.reshape(g * m, *out.shape[2:])

    def check(self) -> None:
        """Map the forward once (eval mode, no gradients, no state changed): a module vmap cannot
        map is an Unstackable error naming why."""
        shape = self.member_batches.loaders[0].images.shape[1:]
        per_member = () if self.member_batches.shared else (len(self.members),)  # as training lays them out
        x = torch.zeros(*per_member, 2, *shape, device=self.device)
        try:
            with torch.no_grad():
                self.template.eval()
                out = self._forward(self.params, self.buffers, x)
        except Exception as exc:  # noqa: BLE001 - whatever vmap refuses in the user's forward
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise Unstackable(f"torch.func.vmap cannot map {type(self.template).__name__}'s forward "
                              f"({type(exc).__name__}: {first})") from None
        finally:
            self.template.train()
        if out.shape[:2] != (len(self.members), 2):
            raise Unstackable(f"the stacked forward gave {tuple(out.shape)}, not [members, batch, classes]")

    # -- loop.Trainee ---------------------------------------------------------------------------

    def training_loader(self) -> DeviceLoader:
        return self.member_batches.loaders[0]

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.template.train()
        self.member_batches.set_epoch(self.epoch, start_step=self.step)
        return iter(self.member_batches)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, active: list[bool]) -> tuple[torch.Tensor, torch.Tensor, int]:
        from ..runtime import autocast

        with autocast(self.device, self.dtype):
            out = self._forward(self.params, self.buffers, x, self.member_batches.sizes)
        nll, loss = self.loss.members(out.float(), y)
        self.optimizer.zero_grad()
        loss.sum().backward()  # members never mix: each one's gradient is its own loss's
        self.optimizer.step(active)
        with torch.no_grad():
            return nll.detach(), (out.argmax(dim=-1) == y).sum(dim=-1), y.shape[-1]

    def lrs(self) -> list[float]:
        return self.optimizer.schedules.lrs()

    def schedule_step(self, per_step: bool, active: list[bool], val_losses: Optional[list[float]] = None) -> None:
        self.optimizer.schedules.step(per_step, active, val_losses)

    def predict(self, loader: DeviceLoader, tta: bool = False, flip: bool = False,
                weights: Optional[tuple[Tensors, Tensors]] = None) -> list[Predictions]:
        """Every member (its current weights, or `weights`) on `loader`, in eval mode."""
        params, buffers = weights or (self.params, self.buffers)
        self.template.eval()
        try:
            return predict_members(lambda x: self._forward(params, buffers, x), loader, len(self.members),
                                   dtype=self.dtype, tta=tta, flip=flip)
        finally:
            self.template.train()

    def validate(self) -> list[dict]:
        return [{"val_loss": p.loss, "val_accuracy": p.accuracy, "val_error": 1.0 - p.accuracy,
                 "val_seconds": p.seconds} for p in self.predict(self.val_loader)]

    def evaluate_before(self) -> list[dict]:
        """eval_before's row for every member: the initial weights on the training split (in order,
        unaugmented) and on the validation split."""
        start = time.perf_counter()
        train = self.predict(self.member_batches.loaders[0].in_order(self.members[0].cfg.eval_batch_size))
        val = self.validate()
        seconds = (time.perf_counter() - start) / len(self.members)
        return [{"epoch": 0, "train_loss": t.loss, "train_accuracy": t.accuracy, "train_error": 1.0 - t.accuracy,
                 "lr": lr, "seconds": seconds, **v, "best_epoch": 0} for t, v, lr in zip(train, val, self.lrs())]

    def snapshot(self, k: int) -> State:
        tensors = {**self.params, **self.buffers}
        return {key: tensors[key][k].detach().clone() for key in self.keys}

    # -- checkpoints ----------------------------------------------------------------------------

    def member_record(self, k: int) -> dict[str, Any]:
        optimizer, scheduler = self.optimizer.member_state(k)
        return {"model": self.snapshot(k), "optimizer": optimizer, "scheduler": scheduler}

    @torch.no_grad()
    def load_records(self, records: list[dict[str, Any]]) -> None:
        tensors = {**self.params, **self.buffers}
        for k, record in enumerate(records):
            for key in self.keys:
                tensors[key][k].copy_(record["model"][key])
        active = [record.get("outcome") is None for record in records]
        self.optimizer.load_members([r["optimizer"] for r in records], [r["scheduler"] for r in records], active)

    def state_shapes(self) -> dict[str, torch.Size]:
        return {k: v.shape for k, v in self.template.state_dict().items()}

    # -- after training -------------------------------------------------------------------------

    def member_state(self, k: int) -> State:
        """Member k's final weights (its best ones where restored), as its model file holds them."""
        return self.members[k].final_state or self.snapshot(k)

    def final_predict(self, loader: DeviceLoader, tta: bool = False, flip: bool = False) -> list[Predictions]:
        """Every member's final weights on `loader`, stacked once more: one pass for all."""
        finals = [self.member_state(k) for k in range(len(self.members))]
        params = {key: torch.stack([f[key] for f in finals]) for key in self.params}
        buffers = {key: torch.stack([f[key] for f in finals]) if key in self.keys else value
                   for key, value in self.buffers.items()}
        return self.predict(loader, tta, flip, weights=(params, buffers))


def _blocks(tensors: Tensors, g: int, m: int) -> Tensors:
    """[K, ...] tensors viewed as [G, M, ...] (K = G * M; views: gradients and updates reach them)."""
    return {key: value.view(g, m, *value.shape[1:]) for key, value in tensors.items()}
