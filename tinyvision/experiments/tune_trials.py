"""Tuning trials and the workers that run them: each trial is a normal run directory
OUT/trials/trial-0007 whose per-epoch validation NLL feeds the pruner; a worker joins the study
and runs its share of the missing trials, in this process or in pool worker processes."""
from __future__ import annotations

import os
import socket
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .. import runs
from ..errors import TinyVisionError
from .pool import run_in_processes, threads_per_worker
from .tune_spec import TuneSpec
from .tune_study import counts, open_storage, optuna_errors_only
from .tune_summary import format_params, trial_row


class TrialFailed(TinyVisionError):
    """A trial whose run ended without a usable result (diverged, out of memory)."""


@dataclass(frozen=True)
class Worker:
    """What one worker process needs (picklable: workers are spawned)."""

    spec: TuneSpec
    out_dir: Path
    storage: str
    study: str
    n_trials: int
    total: int
    seed: int
    threads: Optional[int]
    quiet: bool


def _train_trial(w: Worker, trial: Any, run_dir: Path) -> dict[str, Any]:
    """The trial's run; a failure becomes a result. Its pruner decides after each epoch."""
    import torch

    from ..pipeline import train
    from ..training.loop import Outcome

    def on_epoch(row: dict) -> Optional[Outcome]:
        trial.report(row["val_loss"], int(row["epoch"]))  # step = epoch (1, 2, ...)
        if not trial.should_prune():
            return None
        return Outcome("pruned", f"pruned at epoch {int(row['epoch'])}: val loss {row['val_loss']:.4f} "
                                 "worse than the median of earlier trials")

    try:
        return train(w.spec.config({n: d.suggest(trial) for n, d in w.spec.space.items()}, w.threads),
                     run_dir=run_dir, quiet=True, on_epoch=on_epoch)
    except (TinyVisionError, torch.cuda.OutOfMemoryError) as exc:
        result = {"status": "failed", "reason": str(exc).splitlines()[0], "run_dir": str(run_dir)}
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.write_result(run_dir, result)
        return result
    finally:
        (run_dir / runs.CHECKPOINT).unlink(missing_ok=True)  # trials are never resumed


def objective(w: Worker, trial: Any) -> float:
    """The best validation NLL of the trial's run; the run's status says how Optuna records it."""
    import optuna

    run_dir = (w.out_dir / "trials" / f"trial-{trial.number:04d}").resolve()
    for key, value in {"trial": trial.number, "run_dir": str(run_dir), "host": socket.gethostname(),
                       "pid": os.getpid()}.items():
        trial.set_user_attr(key, value)
    result = _train_trial(w, trial, run_dir)
    status = result["status"]
    reason = ("interrupted; running the study again replaces this trial" if status == "interrupted"
              else result.get("reason", ""))
    trial.set_user_attr("status", status)
    if reason:
        trial.set_user_attr("reason", reason)
    if status == "pruned":
        raise optuna.TrialPruned(reason)
    if status == "interrupted":  # a stop request: this trial is recorded as failed, no other starts
        trial.study.stop()
        raise TrialFailed(reason)
    if status != "completed":
        raise TrialFailed(f"{status}: {reason}")
    trial.set_user_attr("val_accuracy", result["best_val"]["accuracy"])
    trial.set_user_attr("test_accuracy", result["test"]["accuracy"])
    return result["best_val"]["loss"]


def progress_line(row: dict[str, Any]) -> str:
    """One finished trial (a row of tune.json), as printed while the study runs."""
    outcome = (f"val loss {row['value']:.4f}" if row["state"] == "complete"
               else row["reason"] or row["status"] or row["state"])
    took = f" ({row['seconds']:.1f}s)" if row["seconds"] is not None else ""
    return f"trial {row['trial']:>3} {row['state']:<8} {outcome}  {format_params(row['params'])}{took}"


def work(w: Worker) -> None:
    """One worker: join the study and run up to n_trials of it."""
    import optuna

    pruner = (optuna.pruners.MedianPruner(n_startup_trials=w.spec.file.pruner.startup_trials,
                                          n_warmup_steps=w.spec.file.pruner.warmup_epochs + 1)
              if w.spec.file.pruner else optuna.pruners.NopPruner())  # steps start at epoch 1
    with warnings.catch_warnings():  # constant_liar is experimental in Optuna 4 (the default in 5)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # the liar keeps parallel workers from sampling next to each other's running trials
        sampler = optuna.samplers.TPESampler(seed=w.seed, n_startup_trials=w.spec.file.sampler.startup_trials,
                                             constant_liar=True)
    study = optuna.load_study(study_name=w.study, storage=open_storage(w.storage), sampler=sampler, pruner=pruner)

    def report(study: Any, t: Any) -> None:
        if not w.quiet:
            print(progress_line(trial_row(t)), file=sys.stderr, flush=True)

    def cap(study: Any, t: Any) -> None:  # as MaxTrialsCallback, counting what `counts` counts
        if sum(map(counts, study.get_trials(deepcopy=False))) >= w.total:
            study.stop()  # the study holds `total` finished trials, whoever ran them

    with optuna_errors_only():
        study.optimize(lambda trial: objective(w, trial), n_trials=w.n_trials,
                       catch=(TinyVisionError,), callbacks=[cap, report])


def plan(spec: TuneSpec, study: Any, out_dir: Path, url: str, total: int, workers: int,
         quiet: bool) -> list[Worker]:
    """The trials still missing, split between the workers (none with nothing to do)."""
    import numpy as np

    existing = study.get_trials(deepcopy=False)
    remaining = max(0, total - sum(map(counts, existing)))
    shares = [n for n in (remaining // workers + (i < remaining % workers) for i in range(workers)) if n]
    threads = threads_per_worker(len(shares)) if len(shares) > 1 else None
    # distinct samplers: per worker, and per resumption (else the random start repeats itself)
    seeds = [int(np.random.SeedSequence([spec.file.sampler.seed, len(existing), i]).generate_state(1)[0])
             for i in range(len(shares))]
    return [Worker(spec, out_dir, url, study.study_name, n, total, seed, threads, quiet)
            for n, seed in zip(shares, seeds)]


def run_workers(workers: list[Worker]) -> None:
    """One worker here; several each in its own process. A worker that dies (killed, out of memory)
    ends the round with a one-line error: the study keeps every finished trial and a rerun
    replaces the lost ones."""
    if len(workers) == 1:
        work(workers[0])
    elif workers and run_in_processes(work, [(w,) for w in workers], len(workers), lambda i, _: None):
        raise TinyVisionError("a tuning worker process died (killed, or out of memory); the finished trials "
                              "are kept in the study: run the same command again to finish it")
