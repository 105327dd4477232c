"""One run stepping its own module: the fastest path for one run (channels_last on convolutions,
autocast, torch.optim's fused step without its per-call Python: _fused.FusedStep), and the only
one for torch.compile, torchrun (DistributedDataParallel) and fp16 (torch.amp.GradScaler).
Gradient clipping is torch.nn.utils.clip_grad_norm_ over the run's parameters."""
from __future__ import annotations

import time
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import DeviceLoader
from ..evaluate import Forward, Predictions, predict_members
from .._fused import FusedStep
from ..optim import PER_STEP_SCHEDULES, current_lr, step_scheduler
from ..runtime import autocast
from .loop import Member, State
from .losses import Loss
from .trainee import TraineeBase


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model) if hasattr(model, "require_backward_grad_sync") else model


class SingleModule(TraineeBase):
    """A trainee of one: `model` (maybe compiled or wrapped for torchrun) trains `net`'s weights."""

    def __init__(self, member: Member, net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Optional[torch.optim.lr_scheduler.LRScheduler], loader: DeviceLoader,
                 val_loader: DeviceLoader, loss: Loss, dtype: Optional[torch.dtype],
                 scaler: Optional[torch.amp.GradScaler] = None) -> None:
        super().__init__([member], loader.device, loss, dtype)
        self.net, self.model, self.optimizer, self.scheduler = net, model, optimizer, scheduler
        self.loader, self.val_loader = loader, val_loader
        self._step = FusedStep(optimizer)  # optimizer.step(), bit for bit, less its per-call Python
        self.template = net  # the architecture (summaries)
        self.scaler = scaler  # fp16: the loss scaled so that small gradients survive float16
        self.clip = member.cfg.clip_grad_norm  # None: no clipping, nothing done per step
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.per_step_schedule = member.cfg.schedule in PER_STEP_SCHEDULES

    def training_loader(self) -> DeviceLoader:
        return self.loader

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.model.train()
        self.loader.set_epoch(self.epoch, start_step=self.step)
        return iter(self.loader)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, active: list[bool]) -> tuple[torch.Tensor, torch.Tensor, int]:
        with autocast(self.device, self.dtype):
            out = self.model(x)
            loss = self.loss.one(out.float(), y)
        self._step.zero_grad()
        if self.scaler is not None:
            self._scaled_step(loss)
        else:
            loss.backward()
            if self.clip is not None:
                nn.utils.clip_grad_norm_(self.params, self.clip)
            self._step()
        with torch.no_grad():  # 0-dim: the loop's [1] sums take them as they are
            nll = loss if self.loss.reports_its_nll else F.cross_entropy(out.float(), y)
            return nll, (out.argmax(dim=1) == y).sum(), len(y)

    def _scaled_step(self, loss: torch.Tensor) -> None:
        """fp16 (torch.amp.GradScaler): the loss scaled up for the backward pass, the gradients
        unscaled before clipping; a step whose gradients overflowed is skipped and the scale lowered.
        torch.optim's own step (FusedStep passes no gradient scale)."""
        self.scaler.scale(loss).backward()
        if self.clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def lrs(self) -> list[float]:
        return [current_lr(self.optimizer)]

    def schedule_step(self, per_step: bool, active: list[bool], val_losses: Optional[list[float]] = None) -> None:
        if self.scheduler is not None and self.per_step_schedule == per_step:
            step_scheduler(self.scheduler, val_losses[0] if val_losses else None)

    def forward(self) -> Forward:
        return lambda x: self.model(x).unsqueeze(0)

    def predict(self, loader: DeviceLoader, tta: bool = False, flip: bool = False) -> list[Predictions]:
        """The module (its weights as they are: the final ones once stopped) on `loader`, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        try:
            return predict_members(self.forward(), loader, 1, dtype=self.dtype, tta=tta, flip=flip)
        finally:
            self.model.train(was_training)

    def validate(self) -> list[dict]:
        val = self.predict(self.val_loader)[0]
        return [{"val_loss": val.loss, "val_accuracy": val.accuracy, "val_error": 1.0 - val.accuracy,
                 "val_seconds": val.seconds}]

    def evaluate_before(self) -> list[dict]:
        """The epoch-0 row: train and validation loss/accuracy of the initial weights (eval mode, the
        whole training split in order, unaugmented). Not a candidate for the best epoch."""
        cfg, start = self.members[0].cfg, time.perf_counter()
        train = self.predict(self.loader.in_order(cfg.eval_batch_size))[0]
        val = self.validate()[0]
        return [{"epoch": 0, "train_loss": train.loss, "train_accuracy": train.accuracy,
                 "train_error": 1.0 - train.accuracy, "lr": current_lr(self.optimizer),
                 "seconds": time.perf_counter() - start, **val, "best_epoch": 0}]

    def snapshot(self, k: int) -> State:
        return {k: v.detach().clone() for k, v in unwrap(self.model).state_dict().items()}

    def member_record(self, k: int) -> dict[str, Any]:
        return {"model": self.snapshot(0), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})}

    def load_records(self, records: list[dict[str, Any]]) -> None:
        from ..optim import match_state_layout

        record = records[0]
        self.net.load_state_dict(record["model"])  # copies into the live parameters: their layout stays
        self.optimizer.load_state_dict(record["optimizer"])
        match_state_layout(self.optimizer)  # build_optimizer's load hook does it too; any optimizer here
        if self.scheduler is not None and record["scheduler"] is not None:
            self.scheduler.load_state_dict(record["scheduler"])
        if self.scaler is not None and record.get("scaler"):  # its scale and growth count: exact resumes
            self.scaler.load_state_dict(record["scaler"])

    def state_shapes(self) -> dict[str, torch.Size]:
        return {k: v.shape for k, v in self.net.state_dict().items()}

    def _stopped(self, k: int, restored: bool) -> None:
        if restored:
            unwrap(self.model).load_state_dict(self.members[0].best_state)

    def member_state(self, k: int) -> State:
        """The member's final weights (its best ones where restored), as its model file holds them."""
        return self.members[0].final_state or self.net.state_dict()

    def final_predict(self, loader: DeviceLoader, tta: bool = False, flip: bool = False) -> list[Predictions]:
        return self.predict(loader, tta, flip)
