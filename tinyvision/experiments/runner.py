"""Run every (point, seed) of an experiment, each in its own run directory; resumable, parallel.

Running an experiment again skips finished runs (status completed or diverged), resumes
interrupted ones from their checkpoint and restarts the rest. With jobs > 1 runs go to worker
processes, each given cores // jobs threads so the machine is not oversubscribed; the runs of a
worker that dies (killed, out of memory) are run again in fresh workers, and a Ctrl-C stops the
running runs at their next step (checkpointed) and starts no other. A run directory being
written by another process (a second `run` of the same experiment) is left to it.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import yaml

from .. import runs
from ..checkpoint import atomic_write
from ..errors import TinyVisionError
from .spec import Experiment, Point

MANIFEST, SPEC_FILE = "manifest.json", "experiment.yaml"
DONE_STATUSES = {"completed", "diverged"}
POOL_ROUNDS = 3  # pools started for the runs of workers that died, the first included
_stop: Any = None  # in worker processes: an Event set when the experiment is interrupted


def _init_worker(stop: Any) -> None:
    """In each worker process: the interrupt Event, and SIGTERM left fatal."""
    from ..pipeline import leave_sigterm_fatal

    global _stop
    _stop = stop
    leave_sigterm_fatal()


@dataclass(frozen=True)
class RunJob:
    point: Point
    seed: int
    run_dir: Path
    config: dict[str, Any]


def jobs_of(experiment: Experiment, exp_dir: Path) -> list[RunJob]:
    jobs = []
    for point in experiment.points:
        folder = exp_dir / "runs" / f"{point.id}-{runs.slug(point.label)}"
        for seed in experiment.seeds:
            cfg = experiment.config(point, seed).model_dump()
            jobs.append(RunJob(point, seed, folder / f"seed{seed}", cfg))
    return jobs


def manifest(experiment: Experiment, exp_dir: Path, jobs: list[RunJob]) -> dict[str, Any]:
    points = []
    for point in experiment.points:
        point_runs = [{"seed": j.seed, "dir": str(j.run_dir.relative_to(exp_dir))}
                      for j in jobs if j.point == point]
        points.append({"id": point.id, "label": point.label, "values": point.values, "runs": point_runs})
    return {"name": experiment.spec.name, "kind": experiment.spec.kind, "axes": experiment.axes,
            "seeds": experiment.seeds, "points": points}


def prepare_dir(experiment: Experiment, exp_dir: Path) -> list[RunJob]:
    """Create (or re-open) the experiment directory; refuse one holding a different experiment."""
    text = yaml.safe_dump(experiment.spec.model_dump(), sort_keys=False)
    spec_file = exp_dir / SPEC_FILE
    if spec_file.exists():
        if yaml.safe_load(spec_file.read_text()) != yaml.safe_load(text):
            raise TinyVisionError(f"{exp_dir} holds a different experiment; choose another --out or name "
                                  "(nothing was changed)")
    else:
        exp_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(spec_file, text)
    jobs = jobs_of(experiment, exp_dir)
    atomic_write(exp_dir / MANIFEST, json.dumps(manifest(experiment, exp_dir, jobs), indent=2) + "\n")
    return jobs


def _reset(run_dir: Path) -> None:
    """Remove what an unfinished run without a checkpoint left (only tinyvision's own files)."""
    for name in (runs.CONFIG, runs.METRICS, runs.RESULT, runs.WEIGHTS, runs.CHECKPOINT):
        (run_dir / name).unlink(missing_ok=True)


def run_job(job: RunJob, threads: Optional[int] = None, quiet: bool = True) -> dict[str, Any]:
    """Train one run unless it is already done; failures become a result, not an exception."""
    if _stop is not None and _stop.is_set():  # queued before a Ctrl-C: not to be started now
        return {"status": "not started", "reason": "the experiment was interrupted",
                "run_dir": str(job.run_dir), "skipped": True}
    job.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with runs.lock_run_dir(job.run_dir):
            return _run_locked(job, threads, quiet)
    except runs.RunDirBusy as exc:  # its other writer will finish it
        return {"status": "busy", "reason": str(exc), "run_dir": str(job.run_dir), "skipped": True}


def _run_locked(job: RunJob, threads: Optional[int], quiet: bool) -> dict[str, Any]:
    from ..pipeline import train  # imported here: worker processes start light

    previous = runs.read_result(job.run_dir) if (job.run_dir / runs.RESULT).exists() else None
    if previous and previous.get("status") in DONE_STATUSES:
        return {**previous, "skipped": True}
    try:
        if (job.run_dir / runs.CHECKPOINT).exists() and (job.run_dir / runs.CONFIG).exists():
            return train(runs.read_config(job.run_dir), run_dir=job.run_dir, resume=True, quiet=quiet)
        _reset(job.run_dir)
        config = {**job.config, "threads": job.config.get("threads") or threads}
        return train(config, run_dir=job.run_dir, quiet=quiet)
    except TinyVisionError as exc:
        result = {"status": "failed", "reason": str(exc), "run_dir": str(job.run_dir)}
        runs.write_result(job.run_dir, result)
        return result


def _describe(job: RunJob, result: dict[str, Any]) -> str:
    test = result.get("test") or {}
    acc = f"test acc {100 * test['accuracy']:.2f}%" if test else result.get("status", "?")
    if result.get("skipped"):
        took = "skipped: " + ("done" if result.get("status") in DONE_STATUSES else result.get("reason", ""))
    else:
        took = f"{result.get('total_seconds', 0):.1f}s"
    return f"{job.point.id} {job.point.label} seed {job.seed}: {acc} ({took})"


def execute(jobs: list[RunJob], *, workers: int = 1, quiet: bool = False,
            on_result: Optional[Callable[[RunJob, dict], None]] = None) -> list[dict[str, Any]]:
    """Run jobs (in order when workers == 1) and return their results in job order."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    results: list[Optional[dict]] = [None] * len(jobs)

    def done(i: int, result: dict) -> None:
        results[i] = result
        if not quiet:
            finished = sum(r is not None for r in results)
            print(f"[{finished}/{len(jobs)}] {_describe(jobs[i], result)}", file=sys.stderr, flush=True)
        if on_result:
            on_result(jobs[i], result)

    if workers <= 1:
        for i, job in enumerate(jobs):
            done(i, run_job(job, quiet=True))
        return results  # type: ignore[return-value]
    threads = max(1, cores // workers)
    pending = list(range(len(jobs)))
    for _ in range(POOL_ROUNDS):
        pending = _pool_round(jobs, pending, workers, threads, done)
        if not pending:
            return results  # type: ignore[return-value]
        print(f"a worker process died; running its {len(pending)} unfinished run(s) again",
              file=sys.stderr, flush=True)
    for i in pending:
        done(i, {"status": "failed", "reason": f"its worker process died {POOL_ROUNDS} times",
                 "run_dir": str(jobs[i].run_dir)})
    return results  # type: ignore[return-value]


@contextlib.contextmanager
def _ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here even where it was inherited as ignored (a background job
    of a script): the workers' runs always stop on it (pipeline.graceful_stop installs its handler),
    so the parent must always stop handing out runs too."""
    try:
        old = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: no signals here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _pool_round(jobs: list[RunJob], pending: list[int], workers: int, threads: int,
                done: Callable[[int, dict], None]) -> list[int]:
    """Run jobs[pending] in a fresh pool; the indices lost with a dead worker (the pool then fails)."""
    lost, context = [], get_context("spawn")
    stop = context.Event()
    with _ctrl_c_raises(), ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=context,
                             initializer=_init_worker, initargs=(stop,)) as pool:
        futures = {pool.submit(run_job, jobs[i], threads): i for i in pending}
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool:  # what it had written is whole (atomic); a rerun resumes it
                    lost.append(futures[future])
                    continue
                done(futures[future], result)
        except KeyboardInterrupt:  # the workers' runs got the Ctrl-C too and stop at their next step
            stop.set()  # runs already handed to a worker's queue return without starting
            pool.shutdown(cancel_futures=True)  # the rest are never handed out
            raise
    return sorted(lost)
