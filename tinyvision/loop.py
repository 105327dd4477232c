"""The training loop, one for every run: train() steps K runs together over device-resident
batches (a Trainee) and returns why each stopped (an Outcome): finished, stopped early,
interrupted, pruned or diverged. A single run is a trainee of one (SingleRun; fit() is train() of
it); a population (population.train.Population) is a trainee of K stacked runs. The loop owns
epochs and steps, the sums of a part epoch (exact resumes), divergence, early stopping and best
weights (end_epoch), stops and hooks; a trainee owns its model's forward, backward and
optimiser step, its schedules and its evaluation.

Losses and accuracies accumulate on the device and are read once per epoch (and every log_every
steps when steps.csv is asked for). The best weights (lowest validation NLL) are restored at the
end unless cfg.restore_best is false, so they are the ones a caller evaluates. With eval_before,
an epoch-0 row (before the first step) starts the history. A run that stops (early stopping, a
non-finite loss, a hook's outcome) trains no more; the others go on until every run has stopped.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

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
    # sums of an interrupted epoch for exact resumes (train_epoch: loss, correct and lr as lists of
    # one, seen, seconds, active, window; checkpoints of earlier versions hold plain numbers)
    partial: Optional[dict[str, Any]] = None
    steps: list[dict] = field(default_factory=list)  # steps.csv rows (cfg.log_every)


@dataclass
class Hooks:
    """Optional callbacks: the run directories use these to save metrics and checkpoints."""

    # after a run's epoch bookkeeping (run: its RunProgress); returning an Outcome ends that run with it
    on_epoch_end: Callable[[RunProgress, dict], Optional[Outcome]] = lambda run, row: None
    should_stop: Callable[[], bool] = lambda: False  # polled after every step (Ctrl-C)
    progress: Callable[[int, int], Callable[[], None]] = lambda epoch, steps: (lambda: None)
    on_epoch_done: Callable[[], None] = lambda: None  # after the runs' bookkeeping of an epoch they trained through


INTERRUPTED = Outcome("interrupted", "stopped by a signal; resume with --resume")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model) if hasattr(model, "require_backward_grad_sync") else model


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the plain module's weights (keys as in the saved model file)."""
    return {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}


class Trainee(Protocol):
    """K runs that train() steps together. epoch, step and partial are the loop's position (epochs
    completed, steps of the current one, its sums so far): a checkpoint holds them."""

    runs: Sequence[RunProgress]
    cfgs: Sequence[RunConfig]
    device: torch.device
    epoch: int
    step: int
    partial: Optional[dict[str, Any]]

    def outcome(self, k: int) -> Optional[Outcome]: ...
    def stop(self, k: int, outcome: Outcome) -> None: ...  # run k trains no more
    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...  # the rest of the epoch
    def steps_per_epoch(self) -> int: ...
    def train_step(self, x: torch.Tensor, y: torch.Tensor,
                   active: list[bool]) -> tuple[torch.Tensor, torch.Tensor, int]: ...  # nll [K], correct [K], n
    def lrs(self) -> list[float]: ...
    def schedule_step(self, per_step: bool, active: list[bool]) -> None: ...
    def validate(self) -> list[dict]: ...  # each run's val_* columns
    def evaluate_before(self) -> list[dict]: ...  # each run's epoch-0 row
    def snapshot(self, k: int) -> dict[str, torch.Tensor]: ...
    def step_log(self, window: Optional[list[float]]) -> "StepLog | NoStepLog": ...


def train(trainee: Trainee, hooks: Optional[Hooks] = None) -> list[Outcome]:
    """Train every run of `trainee` from where it stands (any epoch and step) to its end:
    cfg.epochs, early stopping (its best weights restored unless cfg.restore_best is false), a
    non-finite loss (diverged), a hook's outcome, or a stop signal (every run still training:
    interrupted, resumable from this step). Returns each run's Outcome."""
    hooks = hooks or Hooks()
    cfg = trainee.cfgs[0]  # the fields runs trained together share
    if cfg.eval_before and trainee.epoch == 0 and trainee.step == 0 and not any(r.history for r in trainee.runs):
        for k, row in enumerate(trainee.evaluate_before()):
            trainee.runs[k].history.append(row)
            _end_with(trainee, k, hooks.on_epoch_end(trainee.runs[k], row))
        if hooks.should_stop() and any(_active(trainee)):  # a signal during that evaluation
            return _interrupt(trainee)
    while trainee.epoch < cfg.epochs and any(_active(trainee)):
        trained = train_epoch(trainee, hooks)
        if trained is None:
            return _interrupt(trainee)
        if not any(_active(trainee)):
            break  # every run diverged in this epoch
        val = trainee.validate()
        trainee.schedule_step(False, _active(trainee))
        trainee.epoch, trainee.step = trainee.epoch + 1, 0
        for k in [k for k, on in enumerate(_active(trainee)) if on]:
            run = trainee.runs[k]
            run.epoch = trainee.epoch
            row = {"epoch": trainee.epoch, **trained[k], **val[k]}
            ending = end_epoch(run, row, trainee.cfgs[k], lambda: trainee.snapshot(k))
            ending = ending or hooks.on_epoch_end(run, row)
            _end_with(trainee, k, ending or (COMPLETED if run.stopped_early else None))
        if trainee.epoch < cfg.epochs and hooks.should_stop() and any(_active(trainee)):
            return _interrupt(trainee)  # a signal during validation: not a whole epoch later
        hooks.on_epoch_done()
    for k in range(len(trainee.runs)):
        if trainee.outcome(k) is None:
            trainee.stop(k, COMPLETED)
    return [trainee.outcome(k) for k in range(len(trainee.runs))]  # type: ignore[misc]


def _active(trainee: Trainee) -> list[bool]:
    return [trainee.outcome(k) is None and not run.stopped_early for k, run in enumerate(trainee.runs)]


def _end_with(trainee: Trainee, k: int, outcome: Optional[Outcome]) -> None:
    if outcome is not None:
        trainee.stop(k, outcome)


def _interrupt(trainee: Trainee) -> list[Outcome]:
    """Every run still training ends as interrupted (the trainee's state is its checkpoint's)."""
    for k, on in enumerate(_active(trainee)):
        if on:
            trainee.stop(k, INTERRUPTED)
    return [trainee.outcome(k) for k in range(len(trainee.runs))]  # type: ignore[misc]


def train_epoch(trainee: Trainee, hooks: Hooks) -> Optional[list[dict]]:
    """The rest of the current epoch (from trainee.step) for every run: their metrics rows (train
    columns); None when a stop signal came (trainee.step and .partial then hold the epoch so far);
    [] when every run has diverged. A run whose training loss stops being finite is stopped as
    diverged at that step."""
    k_all, device = len(trainee.runs), trainee.device
    active = _active(trainee)
    partial = trainee.partial or {"loss": [0.0] * k_all, "correct": [0.0] * k_all, "seen": 0, "seconds": 0.0}
    loss_sum = torch.tensor(_per_run(partial["loss"]), dtype=torch.float64, device=device)  # floats: exact
    correct = torch.tensor(_per_run(partial["correct"]), dtype=torch.float64, device=device)
    seen = int(partial["seen"])
    lr_at_start = _per_run(partial["lr"]) if "lr" in partial else trainee.lrs()
    active_at_start = partial.get("active", sum(active))
    start = time.perf_counter() - partial["seconds"]
    tick = hooks.progress(trainee.epoch + 1, trainee.steps_per_epoch())
    check_every = 1 if device.type == "cpu" else 50  # a finiteness check is a host sync on a GPU
    log = trainee.step_log(partial.get("window"))
    for x, y in trainee.batches():
        log.before_step()
        nll, hits, n = trainee.train_step(x, y, active)
        trainee.schedule_step(True, active)
        with torch.no_grad():
            loss_sum.add_(nll, alpha=n)  # float64 accumulator: one op, no host sync
            correct.add_(hits)
        seen, trainee.step = seen + n, trainee.step + 1
        log.record(loss_sum, correct, seen)
        tick()
        if trainee.step % check_every == 0 and not _finite(loss_sum, k_all) and \
                _diverged(trainee, loss_sum, seen, f"epoch {trainee.epoch + 1}, step {trainee.step}"):
            active = _active(trainee)
            if not any(active):
                return []
        if hooks.should_stop():
            trainee.partial = {"loss": loss_sum.tolist(), "correct": correct.tolist(), "seen": seen,
                               "seconds": time.perf_counter() - start, "lr": lr_at_start,
                               "active": active_at_start, "window": log.window}
            return None
    _diverged(trainee, loss_sum, max(seen, 1), f"epoch {trainee.epoch + 1}")
    trainee.partial = None
    seconds = (time.perf_counter() - start) / max(active_at_start, 1)  # each run's share of the epoch
    losses, hits = loss_sum.tolist(), correct.tolist()
    return [{"train_loss": losses[k] / max(seen, 1), "train_accuracy": hits[k] / max(seen, 1),
             "train_error": 1.0 - hits[k] / max(seen, 1), "lr": lr_at_start[k], "seconds": seconds}
            for k in range(k_all)]


def _finite(loss_sum: torch.Tensor, k_all: int) -> bool:
    """Whether every run's loss sum is finite: one host read (a non-finite one makes the sum so)."""
    return math.isfinite((loss_sum if k_all == 1 else loss_sum.sum()).item())


def _per_run(value: Any) -> list[float]:
    """A part epoch's sums as a list per run (a single run's checkpoint of an earlier version: one number)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _diverged(trainee: Trainee, loss_sum: torch.Tensor, seen: int, where: str) -> bool:
    """Stop, as diverged, every run still training whose summed training loss is not finite."""
    bad = (~torch.isfinite(loss_sum)).tolist()
    hit = [k for k, on in enumerate(_active(trainee)) if on and bad[k]]
    for k in hit:
        trainee.stop(k, _diverged_outcome(f"training loss became {float(loss_sum[k]) / seen} at {where}"))
    return bool(hit)


class StepLog:
    """steps.csv rows (a single run's): every `every` steps (counted over the whole run), the
    training loss and accuracy of the batches since the previous row or the epoch's start,
    whichever is later, and the lr of the row's last step. Reads the epoch's device sums only at a
    row (one host sync)."""

    def __init__(self, state: "TrainState", every: Optional[int], steps_per_epoch: int,
                 window: Optional[list[float]] = None) -> None:
        self.state, self.every, self.steps_per_epoch = state, every, steps_per_epoch
        self.window = window or [0.0, 0.0, 0.0, float(state.step)]  # loss, correct, seen, step at its start
        self.lr: Optional[float] = None

    def _due(self, step_in_epoch: int) -> bool:
        return bool(self.every) and (self.state.epoch * self.steps_per_epoch + step_in_epoch) % self.every == 0

    def before_step(self) -> None:
        """The lr of the coming step when it completes a row (before a per-step schedule moves it)."""
        self.lr = current_lr(self.state.optimizer) if self._due(self.state.step + 1) else None

    def record(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        if self.lr is None:
            return
        loss, hits = float(loss_sum), float(correct)
        w_loss, w_correct, w_seen, w_step = self.window
        n = max(seen - w_seen, 1)
        acc = (hits - w_correct) / n
        self.state.steps.append({"step": self.state.epoch * self.steps_per_epoch + self.state.step,
                                 "epoch": self.state.epoch + 1, "batches": self.state.step - int(w_step),
                                 "train_loss": (loss - w_loss) / n, "train_accuracy": acc,
                                 "train_error": 1.0 - acc, "lr": self.lr})
        self.window = [loss, hits, float(seen), float(self.state.step)]


class NoStepLog:
    """No steps.csv (log_every unset, or runs trained together)."""

    window = None

    def before_step(self) -> None:
        pass

    def record(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        pass


def _diverged_outcome(reason: str) -> Outcome:
    return Outcome("diverged", reason)


def end_epoch(run: RunProgress, row: dict, cfg: RunConfig,
              snapshot: Callable[[], dict[str, torch.Tensor]]) -> Optional[Outcome]:
    """A finished epoch's bookkeeping (run.epoch already counts it): a non-finite validation loss
    ends the run as diverged (no row); else the row gets best_epoch and joins the history, the best
    weights (lowest validation NLL, snapshot() taken only on improvement) are kept in memory, and
    early stopping is decided (run.stopped_early)."""
    if not math.isfinite(row["val_loss"]):
        return _diverged_outcome(f"validation loss became {row['val_loss']} at epoch {run.epoch}")
    if row["val_loss"] < run.best_loss - cfg.min_delta:
        run.best_loss, run.best_epoch, run.bad_epochs = row["val_loss"], run.epoch, 0
        run.best_state = snapshot()
    else:
        run.bad_epochs += 1
    run.stopped_early = cfg.patience is not None and run.bad_epochs >= cfg.patience
    row["best_epoch"] = run.best_epoch
    run.history.append(row)
    return None


# -- a single run: a trainee of one -----------------------------------------------------------------

class SingleRun:
    """One run's model, optimiser and loaders as a Trainee of one (its TrainState is its RunProgress
    and holds the loop's position, so a checkpoint of the state is a checkpoint of the loop)."""

    def __init__(self, state: TrainState, train_loader: DeviceLoader, val_loader: DeviceLoader,
                 cfg: RunConfig) -> None:
        self.state, self.train_loader, self.val_loader = state, train_loader, val_loader
        self.runs, self.cfgs, self.device = [state], [cfg], train_loader.device
        self._outcome: Optional[Outcome] = None
        self._step = FusedStep(state.optimizer)  # optimizer.step(), bit for bit, less its per-call Python
        self._dtype = autocast_dtype(cfg.precision, self.device, state.model)

    # the loop's position is the state's
    epoch = property(lambda self: self.state.epoch, lambda self, v: setattr(self.state, "epoch", v))
    step = property(lambda self: self.state.step, lambda self, v: setattr(self.state, "step", v))
    partial = property(lambda self: self.state.partial, lambda self, v: setattr(self.state, "partial", v))

    def outcome(self, k: int) -> Optional[Outcome]:
        return self._outcome

    def stop(self, k: int, outcome: Outcome) -> None:
        self._outcome = outcome
        if outcome.status == "completed" and restores_best(self.cfgs[0]):
            restore_best(self.state)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.state.model.train()
        self.train_loader.set_epoch(self.state.epoch, start_step=self.state.step)
        return iter(self.train_loader)

    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, active: list[bool]) -> tuple[torch.Tensor, torch.Tensor, int]:
        cfg = self.cfgs[0]
        with autocast(self.device, self._dtype):
            logits = self.state.model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        self._step.zero_grad()
        loss.backward()
        self._step()
        with torch.no_grad():
            nll = loss if cfg.label_smoothing == 0 else F.cross_entropy(logits.float(), y)
            return nll, (logits.argmax(dim=1) == y).sum(), len(y)

    def lrs(self) -> list[float]:
        return [current_lr(self.state.optimizer)]

    def schedule_step(self, per_step: bool, active: list[bool]) -> None:
        if self.state.scheduler is not None and (self.cfgs[0].schedule in PER_STEP_SCHEDULES) == per_step:
            self.state.scheduler.step()

    def validate(self) -> list[dict]:
        val = predict_loader(self.state.model, self.val_loader, precision=self.cfgs[0].precision)
        return [{"val_loss": val.loss, "val_accuracy": val.accuracy, "val_error": 1.0 - val.accuracy,
                 "val_seconds": val.seconds}]

    def evaluate_before(self) -> list[dict]:
        """The epoch-0 row: train and validation loss/accuracy of the initial weights (eval mode, the
        whole training split in order, unaugmented). Not a candidate for the best epoch."""
        cfg, start = self.cfgs[0], time.perf_counter()
        train = predict_loader(self.state.model, self.train_loader.in_order(cfg.eval_batch_size),
                               precision=cfg.precision)
        val = self.validate()[0]
        return [{"epoch": 0, "train_loss": train.loss, "train_accuracy": train.accuracy,
                 "train_error": 1.0 - train.accuracy, "lr": current_lr(self.state.optimizer),
                 "seconds": time.perf_counter() - start, **val, "best_epoch": 0}]

    def snapshot(self, k: int) -> dict[str, torch.Tensor]:
        return snapshot(self.state.model)

    def step_log(self, window: Optional[list[float]]) -> StepLog | NoStepLog:
        every = self.cfgs[0].log_every
        return StepLog(self.state, every, len(self.train_loader), window) if every else NoStepLog()


def fit(state: TrainState, train_loader: DeviceLoader, val_loader: DeviceLoader,
        cfg: RunConfig, hooks: Optional[Hooks] = None) -> Outcome:
    """Train one run (train() of a SingleRun) from state.epoch and state.step to cfg.epochs or early
    stopping, and restore its best weights (unless cfg.restore_best is false; also when a hook
    ends it as "completed"); any other ending (interrupted, diverged, pruned) leaves the weights
    as they are."""
    return train(SingleRun(state, train_loader, val_loader, cfg), hooks)[0]


def restores_best(cfg: RunConfig) -> bool:
    """restore_best as given; unset, true except when validating on the test set (val_size=0),
    where picking weights by their test score would make that score optimistic."""
    return cfg.restore_best if cfg.restore_best is not None else not cfg.validates_on_test


def restore_best(state: TrainState) -> None:
    if state.best_state is not None:
        unwrap(state.model).load_state_dict(state.best_state)
