"""The training loop: fit() runs epochs over device-resident batches with early stopping and
returns why it stopped (an Outcome): finished, stopped early, interrupted, pruned or diverged.

Losses and accuracies accumulate on the device and are read once per epoch (and every log_every
steps when steps.csv is asked for). The best weights (lowest validation NLL) are restored at the
end unless cfg.restore_best is false, so they are the ones a caller evaluates. With eval_before,
an epoch-0 row (before the first step) starts the history.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import RunConfig
from .data.loader import DeviceLoader
from .evaluate import predict_loader
from ._fused import FusedStep
from .optim import PER_STEP_SCHEDULES, current_lr
from .runtime import autocast, autocast_dtype


@dataclass(frozen=True)
class Outcome:
    """Why fit() returned. status is the run's status: "completed" (all epochs, or early stopping:
    TrainState.stopped_early), "interrupted" (should_stop said so; resumable from this step),
    "diverged" (a non-finite loss) or any status an on_epoch_end hook returns (e.g. "pruned")."""

    status: str
    reason: str = ""


COMPLETED = Outcome("completed")


@dataclass(kw_only=True)
class RunProgress:
    """One run's epoch bookkeeping: counters, history, best weights and early stopping. A single
    run's TrainState and each population member (population.train.Member) are one of these, and
    end_epoch() keeps both: the rules exist once."""

    epoch: int = 0  # epochs completed
    best_loss: float = math.inf
    best_epoch: int = 0  # 1-based epoch of best_state; 0 = none yet
    best_state: Optional[dict[str, torch.Tensor]] = None
    bad_epochs: int = 0  # epochs since the last improvement (early stopping)
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False

    def progress(self) -> dict[str, Any]:
        """These fields by name (as keywords for another RunProgress: a member's as its run's TrainState)."""
        return {f.name: getattr(self, f.name) for f in fields(RunProgress)}


@dataclass
class TrainState(RunProgress):
    """Everything needed to continue training exactly where it stopped."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler]
    step: int = 0  # steps completed within the current epoch (resume mid-epoch)
    # partial sums of an interrupted epoch (loss, correct, seen, seconds) for exact resumes
    partial: Optional[dict[str, float]] = None
    steps: list[dict] = field(default_factory=list)  # steps.csv rows (cfg.log_every)


@dataclass
class Hooks:
    """Optional callbacks: the run directory uses these to save metrics and checkpoints."""

    # after each epoch's bookkeeping; returning an Outcome ends training with it
    on_epoch_end: Callable[[TrainState, dict], Optional[Outcome]] = lambda state, row: None
    should_stop: Callable[[], bool] = lambda: False  # polled after every step (Ctrl-C)
    progress: Callable[[int, int], Callable[[], None]] = lambda epoch, steps: (lambda: None)


INTERRUPTED = Outcome("interrupted", "stopped by a signal; resume with --resume")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model) if hasattr(model, "require_backward_grad_sync") else model


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the plain module's weights (keys as in the saved model file)."""
    return {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}


def train_epoch(state: TrainState, loader: DeviceLoader, cfg: RunConfig, hooks: Hooks) -> dict | Outcome:
    """One pass over `loader` from state.step: the epoch's metrics row (no validation), or the
    Outcome that ended it early (interrupted: state.partial holds the epoch so far; diverged)."""
    model, optimizer = state.model, state.optimizer
    model.train()
    device = loader.device
    partial = state.partial or {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
    loss_sum = torch.tensor(partial["loss"], device=device, dtype=torch.float64)
    correct = torch.tensor(partial["correct"], device=device, dtype=torch.float64)
    seen = int(partial["seen"])
    lr_at_start = current_lr(optimizer) if state.step == 0 else partial.get("lr", current_lr(optimizer))
    start = time.perf_counter() - partial["seconds"]
    tick = hooks.progress(state.epoch + 1, len(loader))
    loader.set_epoch(state.epoch, start_step=state.step)
    check_every = 1 if device.type == "cpu" else 50  # a finiteness check is a host sync on GPU
    dtype = autocast_dtype(cfg.precision, device, model)
    step = FusedStep(optimizer)  # optimizer.step(), bit for bit, less its per-call Python
    log = StepLog(state, cfg.log_every, len(loader), partial.get("window"))
    for x, y in loader:
        lr_used = log.lr_if_due(optimizer)
        with autocast(device, dtype):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        step.zero_grad()
        loss.backward()
        step()
        if state.scheduler is not None and cfg.schedule in PER_STEP_SCHEDULES:
            state.scheduler.step()
        with torch.no_grad():
            nll = loss if cfg.label_smoothing == 0 else F.cross_entropy(logits.float(), y)
            loss_sum.add_(nll, alpha=len(y))  # float64 accumulator: one op, no host sync
            correct += (logits.argmax(dim=1) == y).sum()
        seen += len(y)
        state.step += 1
        log.record(lr_used, loss_sum, correct, seen)
        tick()
        if state.step % check_every == 0 and not math.isfinite(loss_sum.item()):
            return _diverged(f"training loss became {float(loss_sum / seen)} at epoch "
                             f"{state.epoch + 1}, step {state.step}")
        if hooks.should_stop():
            state.partial = {"loss": float(loss_sum), "correct": float(correct), "seen": seen,
                             "seconds": time.perf_counter() - start, "lr": lr_at_start, "window": log.window}
            return INTERRUPTED
    if not torch.isfinite(loss_sum):
        return _diverged(f"training loss became {float(loss_sum / max(seen, 1))} at epoch {state.epoch + 1}")
    state.partial = None
    acc = float(correct) / max(seen, 1)
    return {"train_loss": float(loss_sum) / max(seen, 1), "train_accuracy": acc,
            "train_error": 1.0 - acc, "lr": lr_at_start, "seconds": time.perf_counter() - start}


class StepLog:
    """steps.csv rows: every `every` steps (counted over the whole run), the training loss and
    accuracy of the batches since the previous row or the epoch's start, whichever is later, and
    the lr of the row's last step. Reads the epoch's device sums only at a row (one host sync)."""

    def __init__(self, state: TrainState, every: Optional[int], steps_per_epoch: int,
                 window: Optional[list[float]] = None) -> None:
        self.state, self.every, self.steps_per_epoch = state, every, steps_per_epoch
        self.window = window or [0.0, 0.0, 0.0, float(state.step)]  # loss, correct, seen, step at its start

    def _due(self, step_in_epoch: int) -> bool:
        return bool(self.every) and (self.state.epoch * self.steps_per_epoch + step_in_epoch) % self.every == 0

    def lr_if_due(self, optimizer: torch.optim.Optimizer) -> Optional[float]:
        """The lr of the coming step when it completes a row (before a per-step schedule moves it)."""
        return current_lr(optimizer) if self._due(self.state.step + 1) else None

    def record(self, lr: Optional[float], loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        if lr is None:
            return
        loss, hits = float(loss_sum), float(correct)
        w_loss, w_correct, w_seen, w_step = self.window
        n = max(seen - w_seen, 1)
        acc = (hits - w_correct) / n
        self.state.steps.append({"step": self.state.epoch * self.steps_per_epoch + self.state.step,
                                 "epoch": self.state.epoch + 1, "batches": self.state.step - int(w_step),
                                 "train_loss": (loss - w_loss) / n, "train_accuracy": acc,
                                 "train_error": 1.0 - acc, "lr": lr})
        self.window = [loss, hits, float(seen), float(self.state.step)]


def _diverged(reason: str) -> Outcome:
    return Outcome("diverged", reason)


def end_epoch(run: RunProgress, row: dict, cfg: RunConfig,
              snapshot: Callable[[], dict[str, torch.Tensor]]) -> Optional[Outcome]:
    """A finished epoch's bookkeeping (run.epoch already counts it): a non-finite validation loss
    ends the run as diverged (no row); else the row gets best_epoch and joins the history, the best
    weights (lowest validation NLL, snapshot() taken only on improvement) are kept in memory, and
    early stopping is decided (run.stopped_early)."""
    if not math.isfinite(row["val_loss"]):
        return _diverged(f"validation loss became {row['val_loss']} at epoch {run.epoch}")
    if row["val_loss"] < run.best_loss - cfg.min_delta:
        run.best_loss, run.best_epoch, run.bad_epochs = row["val_loss"], run.epoch, 0
        run.best_state = snapshot()
    else:
        run.bad_epochs += 1
    run.stopped_early = cfg.patience is not None and run.bad_epochs >= cfg.patience
    row["best_epoch"] = run.best_epoch
    run.history.append(row)
    return None


def evaluate_before(state: TrainState, train_loader: DeviceLoader, val_loader: DeviceLoader,
                    cfg: RunConfig) -> dict:
    """The epoch-0 row: train and validation loss/accuracy of the initial weights (eval mode, the
    whole training split in order, unaugmented). Not a candidate for the best epoch."""
    start = time.perf_counter()
    train = predict_loader(state.model, train_loader.in_order(cfg.eval_batch_size), precision=cfg.precision)
    val = predict_loader(state.model, val_loader, precision=cfg.precision)
    return {"epoch": 0, "train_loss": train.loss, "train_accuracy": train.accuracy,
            "train_error": 1.0 - train.accuracy, "lr": current_lr(state.optimizer),
            "seconds": time.perf_counter() - start, "val_loss": val.loss, "val_accuracy": val.accuracy,
            "val_error": 1.0 - val.accuracy, "val_seconds": val.seconds, "best_epoch": 0}


def fit(state: TrainState, train_loader: DeviceLoader, val_loader: DeviceLoader,
        cfg: RunConfig, hooks: Optional[Hooks] = None) -> Outcome:
    """Train from state.epoch to cfg.epochs (or early stop) and restore the best weights (unless
    cfg.restore_best is false); any other ending (interrupted, diverged, a hook's) returns at once
    and leaves the weights as they are."""
    hooks = hooks or Hooks()
    if cfg.eval_before and state.epoch == 0 and state.step == 0 and not state.history:
        row = evaluate_before(state, train_loader, val_loader, cfg)
        state.history.append(row)
        ending = hooks.on_epoch_end(state, row)
        if ending is not None:
            return ending
    while state.epoch < cfg.epochs and not state.stopped_early:
        trained = train_epoch(state, train_loader, cfg, hooks)
        if isinstance(trained, Outcome):
            return trained
        row = {"epoch": state.epoch + 1, **trained}
        val = predict_loader(state.model, val_loader, precision=cfg.precision)
        row.update(val_loss=val.loss, val_accuracy=val.accuracy, val_error=1.0 - val.accuracy,
                   val_seconds=val.seconds)
        if state.scheduler is not None and cfg.schedule not in PER_STEP_SCHEDULES:
            state.scheduler.step()
        state.epoch, state.step = state.epoch + 1, 0
        ending = end_epoch(state, row, cfg, lambda: snapshot(state.model))
        if ending is not None:
            return ending
        ending = hooks.on_epoch_end(state, row)
        if ending is not None:
            return ending
    if restores_best(cfg):
        restore_best(state)
    return COMPLETED


def restores_best(cfg: RunConfig) -> bool:
    """restore_best as given; unset, true except when validating on the test set (val_size=0),
    where picking weights by their test score would make that score optimistic."""
    return cfg.restore_best if cfg.restore_best is not None else not cfg.validates_on_test


def restore_best(state: TrainState) -> None:
    if state.best_state is not None:
        unwrap(state.model).load_state_dict(state.best_state)
