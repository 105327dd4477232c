"""The training loop, one for every run: train() steps K runs together over device-resident batches
(a Trainee: one module, or K stacked ones) and yields after each epoch, so the caller writes each
run's files and may end a run (trainee.stop); a run ends as finished, stopped early, interrupted
(a StopRequest), diverged (a non-finite loss) or with the caller's outcome (e.g. pruned).

The loop owns epochs and steps, the sums of a part epoch (exact resumes), divergence, early
stopping and best weights (end_epoch, the rules kept once for every run) and steps.csv rows; a
trainee owns its model's forward, backward and optimiser step, its schedules and evaluation.
Losses and accuracies accumulate on the device and are read once per epoch (and at each steps.csv
row). With eval_before an epoch-0 row (before the first step) starts each history.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import torch

from ..config import RunConfig
from ..optim import current_lr  # noqa: F401 - re-exported for the strategies
from ..stopping import StopRequest

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Outcome:
    """Why a run stopped training: "completed" (its epochs, or early stopping), "interrupted" (a stop
    request; resumable from this step), "diverged" (a non-finite loss) or a caller's (e.g. "pruned")."""

    status: str
    reason: str = ""


COMPLETED = Outcome("completed")
INTERRUPTED = Outcome("interrupted", "stopped by a signal; resume with --resume")


@dataclass(kw_only=True)
class Member:
    """One run's bookkeeping: counters, history, best weights, early stopping and how it ended."""

    cfg: RunConfig
    epoch: int = 0  # epochs completed
    best_loss: float = math.inf
    best_epoch: int = 0  # 1-based epoch of best_state; 0 = none yet
    best_state: Optional[State] = None
    bad_epochs: int = 0  # epochs since the last improvement (early stopping)
    history: list[dict] = field(default_factory=list)  # metrics.csv rows
    steps: list[dict] = field(default_factory=list)  # steps.csv rows (cfg.log_every)
    stopped_early: bool = False
    outcome: Optional[Outcome] = None  # set when it stops training
    record: Optional[dict[str, Any]] = None  # its checkpoint record when it stopped (checkpoint.py)
    final_state: Optional[State] = None  # its weights from then on (the best ones where restored)


PROGRESS_FIELDS = ("epoch", "best_loss", "best_epoch", "best_state", "bad_epochs", "history", "steps",
                   "stopped_early")  # what a checkpoint keeps of a Member, as it is


class Trainee(Protocol):
    """K runs stepped together. epoch, step and partial are the loop's position (epochs completed,
    steps of the current one, its sums so far): a checkpoint holds them."""

    members: Sequence[Member]
    device: torch.device
    epoch: int
    step: int
    partial: Optional[dict[str, Any]]

    def stop(self, k: int, outcome: Outcome) -> None: ...  # run k trains no more
    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...  # the rest of the epoch
    def steps_per_epoch(self) -> int: ...
    def train_step(self, x: torch.Tensor, y: torch.Tensor,
                   active: list[bool]) -> tuple[torch.Tensor, torch.Tensor, int]: ...  # nll [K], correct [K], n
    def lrs(self) -> list[float]: ...
    def schedule_step(self, per_step: bool, active: list[bool],
                      val_losses: Optional[list[float]] = None) -> None: ...  # per epoch: each run's val NLL
    def validate(self) -> list[dict]: ...  # each run's val_* columns
    def evaluate_before(self) -> list[dict]: ...  # each run's epoch-0 row
    def snapshot(self, k: int) -> State: ...


class Progress(Protocol):
    def start_epoch(self, epoch: int, steps: int) -> Callable[[], None]: ...


@dataclass
class EpochEnd:
    """An epoch's end (epoch 0: eval_before): the rows it added, by member index. The caller writes
    them and may end runs (trainee.stop); the loop then applies early stopping and stop requests."""

    epoch: int
    rows: dict[int, dict]


def active(trainee: Trainee) -> list[bool]:
    return [m.outcome is None and not m.stopped_early for m in trainee.members]


def train(trainee: Trainee, stop: Optional[StopRequest] = None,
          progress: Optional[Progress] = None) -> Iterator[EpochEnd]:
    """Train every run of `trainee` from where it stands (any epoch and step) to its end: its
    epochs, early stopping (best weights restored unless restore_best is false), a non-finite loss,
    a caller's outcome, or a stop request (every run still training: interrupted, resumable from
    this step). Yields after each epoch's bookkeeping; every member has an outcome at the end."""
    stop = stop or StopRequest()
    cfg = trainee.members[0].cfg  # the fields runs trained together share
    if cfg.eval_before and trainee.epoch == 0 and trainee.step == 0 and not any(m.history for m in trainee.members):
        rows = dict(enumerate(trainee.evaluate_before()))
        for k, row in rows.items():
            trainee.members[k].history.append(row)
        yield EpochEnd(0, rows)
        if stop.requested and any(active(trainee)):  # a stop during that evaluation
            return _interrupt(trainee)
    while trainee.epoch < cfg.epochs and any(active(trainee)):
        trained = train_epoch(trainee, stop, progress)
        if trained is None:
            return _interrupt(trainee)
        if not any(active(trainee)):
            break  # every run diverged in this epoch
        val = trainee.validate()
        trainee.schedule_step(False, active(trainee), [v["val_loss"] for v in val])  # plateau: each run's own
        trainee.epoch, trainee.step = trainee.epoch + 1, 0
        rows = {}
        for k in [k for k, on in enumerate(active(trainee)) if on]:
            member = trainee.members[k]
            member.epoch = trainee.epoch
            row = {"epoch": trainee.epoch, **trained[k], **val[k]}
            ending = end_epoch(member, row, lambda: trainee.snapshot(k))
            if ending is not None:
                trainee.stop(k, ending)
            else:
                rows[k] = row
        yield EpochEnd(trainee.epoch, rows)
        for k, member in enumerate(trainee.members):
            if member.outcome is None and member.stopped_early:
                trainee.stop(k, COMPLETED)
        if trainee.epoch < cfg.epochs and stop.requested and any(active(trainee)):
            return _interrupt(trainee)  # a stop during validation: not a whole epoch later
    for k, member in enumerate(trainee.members):
        if member.outcome is None:
            trainee.stop(k, COMPLETED)


def _interrupt(trainee: Trainee) -> None:
    """Every run still training ends as interrupted (the trainee's state is its checkpoint's)."""
    for k, on in enumerate(active(trainee)):
        if on:
            trainee.stop(k, INTERRUPTED)


def train_epoch(trainee: Trainee, stop: StopRequest, progress: Optional[Progress] = None) -> Optional[list[dict]]:
    """The rest of the current epoch (from trainee.step) for every run: their metrics rows (train
    columns); None when a stop was requested (trainee.step and .partial then hold the epoch so far);
    [] when every run has diverged. A run whose training loss stops being finite is stopped as
    diverged at that step."""
    k_all, device = len(trainee.members), trainee.device
    running = active(trainee)
    partial = trainee.partial or {"loss": [0.0] * k_all, "correct": [0.0] * k_all, "seen": 0, "seconds": 0.0}
    loss_sum = torch.tensor(_per_run(partial["loss"]), dtype=torch.float64, device=device)  # floats: exact
    correct = torch.tensor(_per_run(partial["correct"]), dtype=torch.float64, device=device)
    seen = int(partial["seen"])
    lr_at_start = _per_run(partial["lr"]) if "lr" in partial else trainee.lrs()
    running_at_start = partial.get("active", sum(running))
    start = time.perf_counter() - partial["seconds"]
    tick = progress.start_epoch(trainee.epoch + 1, trainee.steps_per_epoch()) if progress else (lambda: None)
    check_every = 1 if device.type == "cpu" else 50  # a finiteness check is a host sync on a GPU
    log = StepLog(trainee, partial.get("window"))
    for x, y in trainee.batches():
        log.before_step()
        nll, hits, n = trainee.train_step(x, y, running)
        trainee.schedule_step(True, running)
        with torch.no_grad():
            loss_sum.add_(nll, alpha=n)  # float64 accumulator: one op, no host sync
            correct.add_(hits)
        seen, trainee.step = seen + n, trainee.step + 1
        log.record(loss_sum, correct, seen)
        tick()
        if trainee.step % check_every == 0 and not _finite(loss_sum, k_all) and \
                _diverged(trainee, loss_sum, seen, f"epoch {trainee.epoch + 1}, step {trainee.step}"):
            running = active(trainee)
            if not any(running):
                return []
        if stop.requested:
            trainee.partial = {"loss": loss_sum.tolist(), "correct": correct.tolist(), "seen": seen,
                               "seconds": time.perf_counter() - start, "lr": lr_at_start,
                               "active": running_at_start, "window": log.window}
            return None
    _diverged(trainee, loss_sum, max(seen, 1), f"epoch {trainee.epoch + 1}")
    trainee.partial = None
    seconds = (time.perf_counter() - start) / max(running_at_start, 1)  # each run's share of the epoch
    losses, hits = loss_sum.tolist(), correct.tolist()
    return [{"train_loss": losses[k] / max(seen, 1), "train_accuracy": hits[k] / max(seen, 1),
             "train_error": 1.0 - hits[k] / max(seen, 1), "lr": lr_at_start[k], "seconds": seconds}
            for k in range(k_all)]


def _finite(loss_sum: torch.Tensor, k_all: int) -> bool:
    """Whether every run's loss sum is finite: one host read (a non-finite one makes the sum so)."""
    return math.isfinite((loss_sum if k_all == 1 else loss_sum.sum()).item())


def _per_run(value: Any) -> list[float]:
    """A part epoch's sums as a list per run (a checkpoint of an earlier version: one number)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _diverged(trainee: Trainee, loss_sum: torch.Tensor, seen: int, where: str) -> bool:
    """Stop, as diverged, every run still training whose summed training loss is not finite."""
    bad = (~torch.isfinite(loss_sum)).tolist()
    hit = [k for k, on in enumerate(active(trainee)) if on and bad[k]]
    for k in hit:
        trainee.stop(k, Outcome("diverged", f"training loss became {float(loss_sum[k]) / seen} at {where}"))
    return bool(hit)


class StepLog:
    """steps.csv rows of each run with log_every: every `every` steps (counted over the whole run),
    the training loss and accuracy of the batches since the previous row or the epoch's start,
    whichever is later, and the lr of the row's last step. Reads the device sums only at a row."""

    def __init__(self, trainee: Trainee, window: Optional[list] = None) -> None:
        self.trainee = trainee
        self.every = trainee.members[0].cfg.log_every  # shared by runs trained together
        self.per_epoch = trainee.steps_per_epoch()
        k_all = len(trainee.members)
        # per run: loss, correct at the window's start; then seen and step (shared)
        self.window = window or [[0.0] * k_all, [0.0] * k_all, 0.0, float(trainee.step)]
        self.lrs: Optional[list[float]] = None

    def _due(self, step_in_epoch: int) -> bool:
        return bool(self.every) and (self.trainee.epoch * self.per_epoch + step_in_epoch) % self.every == 0

    def before_step(self) -> None:
        """The lr of the coming step when it completes a row (before a per-step schedule moves it)."""
        self.lrs = self.trainee.lrs() if self._due(self.trainee.step + 1) else None

    def record(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        if self.lrs is None:
            return
        losses, hits = loss_sum.tolist(), correct.tolist()
        w_loss, w_correct, w_seen, w_step = self.window
        if not isinstance(w_loss, list):  # a checkpoint of an earlier version: one run's numbers
            w_loss, w_correct = [w_loss], [w_correct]
        n, t = max(seen - w_seen, 1), self.trainee
        for k, on in enumerate(active(t)):
            if on:
                acc = (hits[k] - w_correct[k]) / n
                t.members[k].steps.append({"step": t.epoch * self.per_epoch + t.step, "epoch": t.epoch + 1,
                                           "batches": t.step - int(w_step), "train_loss": (losses[k] - w_loss[k]) / n,
                                           "train_accuracy": acc, "train_error": 1.0 - acc, "lr": self.lrs[k]})
        self.window = [losses, hits, float(seen), float(t.step)]


def end_epoch(member: Member, row: dict, snapshot: Callable[[], State]) -> Optional[Outcome]:
    """A finished epoch's bookkeeping (member.epoch already counts it): a non-finite validation loss
    ends the run as diverged (no row); else the row gets best_epoch and joins the history, the best
    weights (lowest validation NLL, snapshot() taken only on improvement) are kept in memory, and
    early stopping is decided (member.stopped_early)."""
    cfg = member.cfg
    if not math.isfinite(row["val_loss"]):
        return Outcome("diverged", f"validation loss became {row['val_loss']} at epoch {member.epoch}")
    if row["val_loss"] < member.best_loss - cfg.min_delta:
        member.best_loss, member.best_epoch, member.bad_epochs = row["val_loss"], member.epoch, 0
        member.best_state = snapshot()
    else:
        member.bad_epochs += 1
    member.stopped_early = cfg.patience is not None and member.bad_epochs >= cfg.patience
    row["best_epoch"] = member.best_epoch
    member.history.append(row)
    return None


def restores_best(cfg: RunConfig) -> bool:
    """restore_best as given; unset, true except when validating on the test set (val_size=0),
    where picking weights by their test score would make that score optimistic."""
    return cfg.restore_best if cfg.restore_best is not None else not cfg.validates_on_test
