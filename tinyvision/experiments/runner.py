"""Run an experiment: every (point, seed) in its own run directory; resumable, parallel.

Running an experiment again skips finished runs (completed or diverged), resumes interrupted
ones from their checkpoint and restarts the rest. Runs that can train together do, as populations
(groups.py). With jobs > 1 units of work go to worker processes (pool.py), each given
cores // jobs threads so the machine is not oversubscribed; the runs of a worker that dies
(killed, out of memory) are run again in fresh workers, and a stop request (Ctrl-C, SIGTERM)
stops the running runs at their next step (checkpointed) and starts no other. Shards: shard.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from .. import rundir, runs
from ..config import RunConfig
from ..errors import ConfigError
from ..files import atomic_write
from ..shortrepr import clip_text
from ..stopping import StopRequest, stop_on_signals
from . import folds, pool
from .groups import RunJob, plan, run_group
from .results import collect, write_tables
from .shard import Shard, ShardOutcome
from .spec import DEFAULT_REPEATS, Experiment, build_experiment

MANIFEST, SPEC_FILE = "manifest.json", "experiment.yaml"
POOL_ROUNDS = 3  # pools started for the runs of workers that died, the first included


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
    """Create (or re-open) the experiment directory; refuse one holding a different experiment.
    Under the directory's lock, so shards started at once agree on which experiment it holds."""
    runs.make_dirs(exp_dir)
    with experiment_lock(exp_dir):
        runs.claim_record_dir(exp_dir, SPEC_FILE, experiment.spec.model_dump(),
                              what="experiment", hint="--out or name")
        jobs = jobs_of(experiment, exp_dir)
        atomic_write(exp_dir / MANIFEST, json.dumps(manifest(experiment, exp_dir, jobs), indent=2) + "\n")
    return jobs


@contextlib.contextmanager
def experiment_lock(exp_dir: Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock on the experiment directory (as runs.lock_run_dir locks
    a run's, but waiting: it is held for the milliseconds of preparing the directory or writing the
    tables). Where the file system has no locks (some network ones) the work goes on unlocked: every
    file is written atomically, and shards of one experiment write the same content."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        yield
        return
    fd = os.open(exp_dir, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _describe(job: RunJob, result: dict[str, Any]) -> str:
    test = result.get("test") or {}
    acc = f"test acc {100 * test['accuracy']:.2f}%" if test else result.get("status", "?")
    if not test and result.get("reason") and not result.get("skipped"):
        acc += ": " + clip_text(str(result["reason"]).splitlines()[0], 240)  # a failure says why, on its line
    if result.get("skipped"):
        took = "skipped: " + ("done" if result.get("status") in rundir.FINISHED_STATUSES else result.get("reason", ""))
    else:
        took = f"{result.get('total_seconds', 0):.1f}s"
    return f"{job.point.id} {job.point.label} seed {job.seed}: {acc} ({took})"


def execute(jobs: list[RunJob], *, workers: int = 1, quiet: bool = False,
            on_result: Optional[Callable[[RunJob, dict], None]] = None, population: Optional[int] = None,
            sources: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Run jobs (in order when workers == 1) and return their results in job order. Runs that can
    train together do, in populations of at most `population` (None: chosen from memory, see
    groups.plan; 1: one at a time). After a stop request no other run starts: those get a "not
    started" result. sources: models given in Python (they train in this process)."""
    results: list[Optional[dict]] = [None] * len(jobs)

    def done(i: int, result: dict) -> None:
        results[i] = result
        if not quiet:
            finished = sum(r is not None for r in results)
            print(f"[{finished}/{len(jobs)}] {_describe(jobs[i], result)}", file=sys.stderr, flush=True)
        if on_result:
            on_result(jobs[i], result)

    if workers <= 1 or sources:
        with stop_on_signals() as stop:
            for unit in plan(jobs, range(len(jobs)), population):
                if stop.requested:
                    break
                position = _position(jobs, unit)
                if not quiet:
                    print(f"{position}: started", file=sys.stderr, flush=True)
                for i, result in zip(unit, run_group([jobs[i] for i in unit], quiet=quiet, prefix=f"{position} ",
                                                     sources=sources, stop=stop)):
                    done(i, result)
        return _not_started(jobs, results)
    threads, pending, stop = pool.threads_per_worker(workers), list(range(len(jobs))), StopRequest()
    for _ in range(POOL_ROUNDS):
        pending = _pool_round(jobs, plan(jobs, pending, population, workers), workers, threads, done, stop)
        if not pending or stop.requested:
            return _not_started(jobs, results)
        print(f"a worker process died; running its {len(pending)} unfinished run(s) again",
              file=sys.stderr, flush=True)
    for i in pending:
        done(i, {"status": "failed", "reason": f"its worker process died {POOL_ROUNDS} times",
                 "run_dir": str(jobs[i].run_dir)})
    return _not_started(jobs, results)


def _not_started(jobs: list[RunJob], results: list[Optional[dict]]) -> list[dict[str, Any]]:
    return [r if r is not None else {"status": "not started", "reason": "the experiment was interrupted",
                                     "run_dir": str(jobs[i].run_dir), "skipped": True}
            for i, r in enumerate(results)]


def interrupted(results: Sequence[dict[str, Any]]) -> bool:
    """Whether a stop request ended these runs (some interrupted, or never started)."""
    return any(r.get("status") in ("interrupted", "not started") for r in results)


def _position(jobs: list[RunJob], unit: list[int]) -> str:
    if len(unit) == 1:
        job = jobs[unit[0]]
        return f"[{unit[0] + 1}/{len(jobs)}] {job.point.label} seed {job.seed}"
    return f"[{len(unit)} of {len(jobs)}] population of " + ", ".join(
        f"{jobs[i].point.label} seed {jobs[i].seed}" for i in unit)


def _pool_round(jobs: list[RunJob], units: list[list[int]], workers: int, threads: int,
                done: Callable[[int, dict], None], stop: StopRequest) -> list[int]:
    """Run each unit (a run, or runs trained as a population) in a fresh pool; the job indices lost
    with a dead worker (the pool then fails)."""
    def finished(u: int, results: list[dict]) -> None:
        for i, result in zip(units[u], results):
            done(i, result)

    lost = pool.run_in_processes(run_group, [([jobs[i] for i in unit], threads) for unit in units], workers,
                                 finished, stop)
    return [i for u in lost for i in units[u]]


# -- the entry points ----------------------------------------------------------------------------

class ExperimentRun(tuple):
    """(directory, one row per point, the printed table), and whether a stop request ended it
    (`interrupted`: running it again continues it)."""

    interrupted: bool

    def __new__(cls, exp_dir: Path, rows: list[dict[str, Any]], table: str, interrupted: bool = False) -> "ExperimentRun":
        made = super().__new__(cls, (exp_dir, rows, table))
        made.interrupted = interrupted
        return made


def run_experiment(experiment: Experiment, exp_dir: str | Path, *, jobs: int = 1, quiet: bool = False,
                   baseline: Optional[str] = None, population: Optional[int] = None,
                   sources: Optional[dict[str, Any]] = None) -> ExperimentRun:
    """Run (or resume) an experiment; returns (directory, one row per point, text table with the
    verdicts: each point against `baseline`, a point's label, default the first). Runs that
    can train together do, as populations of at most `population` (None: chosen from memory; 1: one
    at a time); the files and tables are the same either way. sources: models given in Python."""
    exp_dir = Path(exp_dir)
    check_baseline(experiment, baseline)
    results = execute(prepare_dir(experiment, exp_dir), workers=jobs, quiet=quiet, population=population,
                      sources=sources)
    return ExperimentRun(exp_dir, *_tables(exp_dir, baseline), interrupted=interrupted(results))


def check_baseline(experiment: Experiment, baseline: str | None) -> None:
    """`baseline` names a point (its varied value, label or id, as results.compare_points finds it
    in the rows): checked before anything runs, not once every run has trained."""
    if baseline is None:
        return
    names = [[p.id, p.label, *(str(v) for v in p.values.values() if len(p.values) == 1)] for p in experiment.points]
    if not any(baseline in n for n in names):
        shown = ", ".join(n[-1] for n in names)  # the varied value, else the label
        raise ConfigError(f"--baseline {baseline!r} is not a point of this experiment ({shown})")


def _tables(exp_dir: Path, baseline: Optional[str]) -> tuple[list[dict[str, Any]], str]:
    """The rows of every run written so far, and the tables (results.csv, results.md) made from them;
    for cross-validation (kind "cv") a row per fold and the summary over folds (folds.py)."""
    with experiment_lock(exp_dir):  # shards finishing together: one writes at a time
        rows = collect(exp_dir)
        if json.loads((exp_dir / MANIFEST).read_text()).get("kind") == folds.KIND:
            return rows, folds.write_fold_tables(exp_dir, rows)
        return rows, write_tables(exp_dir, rows, baseline)


def run_shard(experiment: Experiment, exp_dir: str | Path, shard: Shard, *, jobs: int = 1, quiet: bool = False,
              baseline: Optional[str] = None, population: Optional[int] = None) -> ShardOutcome:
    """Run this shard's slice of the experiment into `exp_dir` (shared with the other shards); the
    tables are written only when every run of the experiment is finished."""
    exp_dir = Path(exp_dir)
    check_baseline(experiment, baseline)
    results = execute(shard.select(prepare_dir(experiment, exp_dir)), workers=jobs, quiet=quiet,
                      population=population)
    finished, total = finished_runs(exp_dir)
    if finished < total:
        return ShardOutcome(exp_dir, shard, results, finished, total, collect(exp_dir), None)
    return ShardOutcome(exp_dir, shard, results, finished, total, *_tables(exp_dir, baseline))


def finished_runs(exp_dir: Path) -> tuple[int, int]:
    """(runs whose result.json says completed or diverged, runs the manifest names)."""
    names = json.loads((exp_dir / MANIFEST).read_text())["points"]
    statuses = [(runs.read_result(exp_dir / r["dir"]) or {}).get("status") for p in names for r in p["runs"]]
    return sum(s in rundir.FINISHED_STATUSES for s in statuses), len(statuses)


def compare(models: Sequence[Any], base: RunConfig, *, out: str | Path = "runs", repeats: int = DEFAULT_REPEATS,
            jobs: int = 1, exp_dir: Optional[str | Path] = None, quiet: bool = False,
            baseline: Optional[str] = None, population: Optional[int] = None) -> ExperimentRun:
    """Train each model with the same budget (data, epochs, optimiser) over `repeats` seeds: the base
    config; returns (experiment dir, rows, printed table and verdicts against `baseline`, default
    the first model). A model may be a name, a spec, file.py:Class, or in Python an nn.Module
    class, instance or factory (these train in this process)."""
    from ..models.source import model_from

    names, sources = [], {}
    for model in models:
        if isinstance(model, str):
            names.append(model)
            continue
        source = model_from(model)
        names.append(source.reference)
        if source.reference.startswith("python:"):
            sources[source.reference] = source
    name = f"compare-{runs.slug(base.dataset)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    experiment = build_experiment({"name": name, "kind": "compare", "base": base.model_dump(),
                                   "zip": {"model": names}, "repeats": repeats}, sources=sources)
    return run_experiment(experiment, Path(exp_dir or Path(out) / name), jobs=jobs, quiet=quiet,
                          baseline=baseline, population=population, sources=sources)


def cross_validate(base: RunConfig | dict[str, Any], k: int, *, out: str | Path = "runs",
                   exp_dir: Optional[str | Path] = None, repeats: int = 1, model: Any = None, jobs: int = 1,
                   quiet: bool = False, population: Optional[int] = None) -> ExperimentRun:
    """k-fold cross-validation of `base` (folds.py): K runs (times `repeats` seeds) in one experiment
    directory (new under `out`, or `exp_dir`: running it again continues it); returns (directory,
    a row per fold, the fold table and the summary over folds). model: as compare's, in Python
    (a config dict's "model" may hold it too)."""
    from ..config import make_config
    from ..models.source import model_from

    if isinstance(base, dict):
        values = dict(base)
        if values.get("model") is not None and not isinstance(values["model"], str):
            model = values.pop("model")
        base = make_config(values)
    sources = {}
    if isinstance(model, str):
        base = base.model_copy(update={"model": model})
    elif model is not None:
        source = model_from(model, base.model_args if isinstance(model, type) else None)
        base = base.model_copy(update={"model": source.reference})
        sources = {source.reference: source} if source.reference.startswith("python:") else {}
    experiment = build_experiment(folds.fold_spec(base, k, repeats=repeats), sources=sources)
    return run_experiment(experiment, Path(exp_dir or Path(out) / experiment.spec.name), jobs=jobs, quiet=quiet,
                          population=population, sources=sources)
