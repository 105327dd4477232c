"""Run an experiment: every (point, seed) in its own run directory; resumable, parallel.

Running an experiment again skips finished runs (status completed or diverged), resumes
interrupted ones from their checkpoint and restarts the rest. With jobs > 1 runs go to worker
processes (pool.py), each given cores // jobs threads so the machine is not oversubscribed; the
runs of a worker that dies (killed, out of memory) are run again in fresh workers, and a Ctrl-C
stops the running runs at their next step (checkpointed) and starts no other. A run directory
being written by another process (a second `run` of the same experiment) is left to it.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .. import runs
from ..checkpoint import atomic_write
from ..config import RunConfig
from ..errors import TinyVisionError
from . import pool
from .results import collect, write_tables
from .spec import DEFAULT_REPEATS, Experiment, Point, build_experiment

MANIFEST, SPEC_FILE = "manifest.json", "experiment.yaml"
DONE_STATUSES = {"completed", "diverged"}
POOL_ROUNDS = 3  # pools started for the runs of workers that died, the first included


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
    runs.claim_record_dir(exp_dir, SPEC_FILE, experiment.spec.model_dump(),
                          what="experiment", hint="--out or name")
    jobs = jobs_of(experiment, exp_dir)
    atomic_write(exp_dir / MANIFEST, json.dumps(manifest(experiment, exp_dir, jobs), indent=2) + "\n")
    return jobs


def _reset(run_dir: Path) -> None:
    """Remove what an unfinished run without a checkpoint left (only tinyvision's own files)."""
    for name in (runs.CONFIG, runs.METRICS, runs.RESULT, runs.WEIGHTS, runs.CHECKPOINT):
        (run_dir / name).unlink(missing_ok=True)


def run_job(job: RunJob, threads: Optional[int] = None, quiet: bool = True, prefix: str = "") -> dict[str, Any]:
    """Train one run unless it is already done; failures become a result, not an exception.
    Unless quiet, its epochs show as a live bar on a terminal (lines elsewhere) after `prefix`."""
    if pool.interrupted():  # queued before a Ctrl-C: not to be started now
        return {"status": "not started", "reason": "the experiment was interrupted",
                "run_dir": str(job.run_dir), "skipped": True}
    job.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with runs.lock_run_dir(job.run_dir):
            return _run_locked(job, threads, quiet, prefix)
    except runs.RunDirBusy as exc:  # its other writer will finish it
        return {"status": "busy", "reason": str(exc), "run_dir": str(job.run_dir), "skipped": True}


def _run_locked(job: RunJob, threads: Optional[int], quiet: bool, prefix: str) -> dict[str, Any]:
    from ..pipeline import train  # imported here: worker processes start light

    previous = runs.read_result(job.run_dir) if (job.run_dir / runs.RESULT).exists() else None
    if previous and previous.get("status") in DONE_STATUSES:
        return {**previous, "skipped": True}
    try:
        if (job.run_dir / runs.CHECKPOINT).exists() and (job.run_dir / runs.CONFIG).exists():
            saved = runs.read_config(job.run_dir)
            saved = saved.model_copy(update={"device": pool.worker_device(saved.device)})
            return train(saved, run_dir=job.run_dir, resume=True, quiet=quiet, progress_prefix=prefix)
        _reset(job.run_dir)
        config = {**job.config, "threads": job.config.get("threads") or threads,
                  "device": pool.worker_device(job.config.get("device", "auto"))}
        return train(config, run_dir=job.run_dir, quiet=quiet, progress_prefix=prefix)
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
            position = f"[{i + 1}/{len(jobs)}] {job.point.label} seed {job.seed}"
            if not quiet:
                print(f"{position}: started", file=sys.stderr, flush=True)
            done(i, run_job(job, quiet=quiet, prefix=f"{position} "))
        return results  # type: ignore[return-value]
    threads, pending = pool.threads_per_worker(workers), list(range(len(jobs)))
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


def _pool_round(jobs: list[RunJob], pending: list[int], workers: int, threads: int,
                done: Callable[[int, dict], None]) -> list[int]:
    """Run jobs[pending] in a fresh pool; the indices lost with a dead worker (the pool then fails)."""
    lost = pool.run_in_processes(run_job, [(jobs[i], threads) for i in pending], workers,
                                 lambda k, result: done(pending[k], result))
    return [pending[k] for k in lost]


# -- the entry points ----------------------------------------------------------------------------

def run_experiment(experiment: Experiment, exp_dir: str | Path, *, jobs: int = 1, quiet: bool = False,
                   baseline: Optional[str] = None) -> tuple[Path, list[dict[str, Any]], str]:
    """Run (or resume) an experiment; returns (directory, one row per point, text table with the
    verdicts: each point against `baseline`, a point's label, default the first)."""
    exp_dir = Path(exp_dir)
    execute(prepare_dir(experiment, exp_dir), workers=jobs, quiet=quiet)
    rows = collect(exp_dir)
    return exp_dir, rows, write_tables(exp_dir, rows, baseline)


def compare(models: Sequence[str], base: RunConfig, *, out: str | Path = "runs", repeats: int = DEFAULT_REPEATS,
            jobs: int = 1, exp_dir: Optional[str | Path] = None, quiet: bool = False,
            baseline: Optional[str] = None) -> tuple[Path, list[dict[str, Any]], str]:
    """Train each model with the same budget (data, epochs, optimiser) over `repeats` seeds: the base
    config; returns (experiment dir, rows, printed table and verdicts against `baseline`, default
    the first model)."""
    name = f"compare-{runs.slug(base.dataset)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    experiment = build_experiment({"name": name, "kind": "compare", "base": base.model_dump(),
                                   "zip": {"model": list(models)}, "repeats": repeats})
    return run_experiment(experiment, Path(exp_dir or Path(out) / name), jobs=jobs, quiet=quiet,
                          baseline=baseline)
