"""Run an experiment: every (point, seed) in its own run directory; resumable, parallel.

Running an experiment again skips finished runs (status completed or diverged), resumes
interrupted ones from their checkpoint and restarts the rest. With jobs > 1 runs go to worker
processes (pool.py), each given cores // jobs threads so the machine is not oversubscribed; the
runs of a worker that dies (killed, out of memory) are run again in fresh workers, and a Ctrl-C
stops the running runs at their next step (checkpointed) and starts no other. A run directory
being written by another process (a second `run` of the same experiment) is left to it.

Shards (--shard I/N): N processes, on one machine or many sharing a file system, each run a
disjoint slice of the runs into the same experiment directory. The directory is prepared under a
lock (same experiment.yaml and manifest.json from every shard); the tables are written by the shard
that finds every run finished, or later by a plain `run`, which skips every finished run.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

from .. import runs
from ..checkpoint import atomic_write
from ..config import RunConfig, make_config
from ..errors import ConfigError, TinyVisionError
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
    """Create (or re-open) the experiment directory; refuse one holding a different experiment.
    Under the directory's lock, so shards started at once agree on which experiment it holds."""
    exp_dir.mkdir(parents=True, exist_ok=True)
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


class Shard(NamedTuple):
    """The index-th (0-based) of `count` disjoint slices of an experiment's runs."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """"I/N" with 0 <= I < N (0-based, as `--array=0-$((N-1))` gives Slurm's task ids)."""
        head, sep, tail = text.partition("/")
        try:
            index, count = int(head), int(tail)
        except ValueError:
            index = count = -1
        if not sep or count < 1 or not 0 <= index < count:
            raise ConfigError(f"--shard {text[:40]!r}: expected I/N with N >= 1 and I from 0 to N-1 "
                              "(0-based: 0/3, 1/3 and 2/3 split the runs in three)")
        return cls(index, count)

    def select(self, jobs: Sequence[RunJob]) -> list[RunJob]:
        """Every count-th run from the index-th: each shard gets runs of every point, so shards of an
        experiment whose points cost different amounts take about the same time."""
        return list(jobs[self.index::self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _reset(run_dir: Path) -> None:
    """Remove what an unfinished run without a checkpoint left (only tinyvision's own files)."""
    for name in (runs.CONFIG, runs.METRICS, runs.RESULT, runs.WEIGHTS, runs.CHECKPOINT, runs.POPULATION_CHECKPOINT):
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


def run_group(group: Sequence[RunJob], threads: Optional[int] = None, quiet: bool = True,
              prefix: str = "") -> list[dict[str, Any]]:
    """Train runs that can share a population as one (population.run.train_members), continuing
    the population from its checkpoint where a killed or stopped one left it; otherwise each run
    that is done, busy or resumable from its own checkpoint is handled as run_job handles it.
    One result per run."""
    if len(group) == 1:
        return [run_job(group[0], threads, quiet, prefix)]
    if pool.interrupted():
        return [run_job(job) for job in group]  # each says "not started"
    from ..population.run import resumable  # imported here: worker processes start light

    results: dict[int, dict[str, Any]] = {}
    with contextlib.ExitStack() as held:
        for i, job in enumerate(group):
            job.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                held.enter_context(runs.lock_run_dir(job.run_dir))
            except runs.RunDirBusy as exc:
                results[i] = {"status": "busy", "reason": str(exc), "run_dir": str(job.run_dir), "skipped": True}
        if resumable([job.run_dir for job in group]):  # the population continues, as a whole
            if results:  # some member is another process's: so is the population
                return [results.get(i) or {"status": "busy", "reason": "its population is busy elsewhere",
                                           "run_dir": str(job.run_dir), "skipped": True}
                        for i, job in enumerate(group)]
            if all(_is_done(job) for job in group):  # killed after its last write: nothing left to train
                (group[0].run_dir / runs.POPULATION_CHECKPOINT).unlink(missing_ok=True)
            else:
                return _train_population(list(group), threads, resume=True)
        fresh = []
        for i, job in enumerate(group):
            if i in results:
                continue
            if _is_done(job) or (job.run_dir / runs.CHECKPOINT).exists():
                results[i] = _run_locked(job, threads, quiet, prefix)  # skipped, or resumed alone
            else:
                fresh.append(i)
        results.update(zip(fresh, _train_population([group[i] for i in fresh], threads, quiet=quiet, prefix=prefix)))
    return [results[i] for i in range(len(group))]


def _is_done(job: RunJob) -> bool:
    previous = runs.read_result(job.run_dir) if (job.run_dir / runs.RESULT).exists() else None
    return bool(previous) and previous.get("status") in DONE_STATUSES


def _train_population(jobs: list[RunJob], threads: Optional[int], quiet: bool = True, prefix: str = "",
                      resume: bool = False) -> list[dict[str, Any]]:
    """Runs (directories locked by the caller) trained as one population: new ones, or (resume)
    the population their checkpoint holds, whose finished members keep their directories as they
    are. A failure is each written run's result."""
    if len(jobs) <= 1 and not resume:
        return [_run_locked(job, threads, quiet, prefix) for job in jobs]
    from ..population.run import train_members  # imported here: worker processes start light

    written = [not (resume and _is_done(job)) for job in jobs]
    for job, w in zip(jobs, written):
        if resume and w:  # what a member's own files said before its population was killed goes
            for name in (runs.CHECKPOINT, runs.WEIGHTS):
                (job.run_dir / name).unlink(missing_ok=True)
        elif not resume:
            _reset(job.run_dir)
    configs = [_member_config(job, threads, resume) for job in jobs]
    try:
        return train_members(configs, [job.run_dir for job in jobs], resume=resume, written=written)
    except TinyVisionError as exc:
        failed = [{"status": "failed", "reason": str(exc), "run_dir": str(job.run_dir)} for job in jobs]
        for job, result, w in zip(jobs, failed, written):
            if w:
                runs.write_result(job.run_dir, result)
        return failed


def _member_config(job: RunJob, threads: Optional[int], resume: bool) -> RunConfig:
    """A member's config: on resume its config.yaml (threads and device as the population began)."""
    if resume and (job.run_dir / runs.CONFIG).exists():
        return runs.read_config(job.run_dir)
    return make_config({**job.config, "threads": job.config.get("threads") or threads,
                        "device": pool.worker_device(job.config.get("device", "auto"))})


def plan(jobs: Sequence[RunJob], indices: Sequence[int], population: Optional[int],
         workers: int = 1) -> list[list[int]]:
    """jobs[indices] in populations of at most `population` runs that can train together (None:
    as many as population.members.auto_population gives their shape, and with several workers
    no more than keeps each of them busy). A population with a checkpoint keeps its members
    (it continues as it was, whatever the size asked for now, unless one at a time is)."""
    if population is not None and population <= 1:
        return [[i] for i in indices]
    from ..population.members import plan_groups

    kept = _checkpointed_populations(jobs, indices)
    taken = {i for group in kept for i in group}
    rest = [i for i in indices if i not in taken]
    groups = plan_groups([make_config(jobs[i].config) for i in rest], population, sharing=workers)
    if population is None and workers > 1:
        share = -(-len(rest) // workers)  # ceil: runs per worker
        groups = [group[start:start + share] for group in groups for start in range(0, len(group), share)]
    return kept + [[rest[k] for k in group] for group in groups]


def _checkpointed_populations(jobs: Sequence[RunJob], indices: Sequence[int]) -> list[list[int]]:
    """Groups of jobs[indices] that a population checkpoint names, in its member order."""
    from ..population.checkpoint import saved_members
    from ..population.run import member_names

    by_name = {member_names([jobs[i].run_dir])[0]: i for i in indices}
    groups: list[list[int]] = []
    for i in indices:
        path = jobs[i].run_dir / runs.POPULATION_CHECKPOINT
        if path.exists():
            group = [by_name.get(name) for name in saved_members(path)]
            if group and None not in group and not any(k in g for g in groups for k in group):
                groups.append(group)  # type: ignore[arg-type]
    return groups


def _describe(job: RunJob, result: dict[str, Any]) -> str:
    test = result.get("test") or {}
    acc = f"test acc {100 * test['accuracy']:.2f}%" if test else result.get("status", "?")
    if result.get("skipped"):
        took = "skipped: " + ("done" if result.get("status") in DONE_STATUSES else result.get("reason", ""))
    else:
        took = f"{result.get('total_seconds', 0):.1f}s"
    return f"{job.point.id} {job.point.label} seed {job.seed}: {acc} ({took})"


def execute(jobs: list[RunJob], *, workers: int = 1, quiet: bool = False,
            on_result: Optional[Callable[[RunJob, dict], None]] = None, population: Optional[int] = None) -> list[dict[str, Any]]:
    """Run jobs (in order when workers == 1) and return their results in job order. Runs that can
    train together do, in populations of at most `population` (None: chosen from memory, see
    plan; 1: one at a time) (run_group)."""
    results: list[Optional[dict]] = [None] * len(jobs)

    def done(i: int, result: dict) -> None:
        results[i] = result
        if not quiet:
            finished = sum(r is not None for r in results)
            print(f"[{finished}/{len(jobs)}] {_describe(jobs[i], result)}", file=sys.stderr, flush=True)
        if on_result:
            on_result(jobs[i], result)

    if workers <= 1:
        for unit in plan(jobs, range(len(jobs)), population):
            position = _position(jobs, unit)
            if not quiet:
                print(f"{position}: started", file=sys.stderr, flush=True)
            for i, result in zip(unit, run_group([jobs[i] for i in unit], quiet=quiet, prefix=f"{position} ")):
                done(i, result)
            if any(results[i]["status"] == "interrupted" for i in unit):  # Ctrl-C/SIGTERM: no other starts
                raise KeyboardInterrupt  # as --jobs N does; re-running the command resumes it
        return results  # type: ignore[return-value]
    threads, pending = pool.threads_per_worker(workers), list(range(len(jobs)))
    for _ in range(POOL_ROUNDS):
        pending = _pool_round(jobs, plan(jobs, pending, population, workers), workers, threads, done)
        if not pending:
            return results  # type: ignore[return-value]
        print(f"a worker process died; running its {len(pending)} unfinished run(s) again",
              file=sys.stderr, flush=True)
    for i in pending:
        done(i, {"status": "failed", "reason": f"its worker process died {POOL_ROUNDS} times",
                 "run_dir": str(jobs[i].run_dir)})
    return results  # type: ignore[return-value]


def _position(jobs: list[RunJob], unit: list[int]) -> str:
    if len(unit) == 1:
        job = jobs[unit[0]]
        return f"[{unit[0] + 1}/{len(jobs)}] {job.point.label} seed {job.seed}"
    return f"[{len(unit)} of {len(jobs)}] population of " + ", ".join(
        f"{jobs[i].point.label} seed {jobs[i].seed}" for i in unit)


def _pool_round(jobs: list[RunJob], units: list[list[int]], workers: int, threads: int,
                done: Callable[[int, dict], None]) -> list[int]:
    """Run each unit (a run, or runs trained as a population) in a fresh pool; the job indices lost
    with a dead worker (the pool then fails)."""
    def finished(u: int, results: list[dict]) -> None:
        for i, result in zip(units[u], results):
            done(i, result)

    lost = pool.run_in_processes(run_group, [([jobs[i] for i in unit], threads) for unit in units], workers,
                                 finished)
    return [i for u in lost for i in units[u]]


# -- the entry points ----------------------------------------------------------------------------

def run_experiment(experiment: Experiment, exp_dir: str | Path, *, jobs: int = 1, quiet: bool = False,
                   baseline: Optional[str] = None, population: Optional[int] = None) -> tuple[Path, list[dict[str, Any]], str]:
    """Run (or resume) an experiment; returns (directory, one row per point, text table with the
    verdicts: each point against `baseline`, a point's label, default the first). Runs that
    can train together do, as populations of at most `population` (None: chosen from memory; 1: one
    at a time); the files and tables are the same either way."""
    exp_dir = Path(exp_dir)
    execute(prepare_dir(experiment, exp_dir), workers=jobs, quiet=quiet, population=population)
    return exp_dir, *_tables(exp_dir, baseline)


def _tables(exp_dir: Path, baseline: Optional[str]) -> tuple[list[dict[str, Any]], str]:
    """The rows of every run written so far, and the tables (results.csv, results.md) made from them."""
    with experiment_lock(exp_dir):  # shards finishing together: one writes at a time
        rows = collect(exp_dir)
        return rows, write_tables(exp_dir, rows, baseline)


@dataclass
class ShardOutcome:
    """What one shard did, and whether the experiment is finished: `table` is None while runs of
    other shards are not (then no table was written)."""

    exp_dir: Path
    shard: Shard
    results: list[dict[str, Any]]  # this shard's runs, in order
    finished: int  # runs of the whole experiment that are finished (completed or diverged)
    total: int
    rows: list[dict[str, Any]]
    table: Optional[str]

    def waiting_line(self) -> str:
        return (f"shard {self.shard}: {len(self.results)} run(s) here; {self.finished} of {self.total} runs "
                f"finished; run without --shard to merge")


def run_shard(experiment: Experiment, exp_dir: str | Path, shard: Shard, *, jobs: int = 1, quiet: bool = False,
              baseline: Optional[str] = None, population: Optional[int] = None) -> ShardOutcome:
    """Run this shard's slice of the experiment into `exp_dir` (shared with the other shards); the
    tables are written only when every run of the experiment is finished."""
    exp_dir = Path(exp_dir)
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
    return sum(s in DONE_STATUSES for s in statuses), len(statuses)


def compare(models: Sequence[str], base: RunConfig, *, out: str | Path = "runs", repeats: int = DEFAULT_REPEATS,
            jobs: int = 1, exp_dir: Optional[str | Path] = None, quiet: bool = False,
            baseline: Optional[str] = None, population: Optional[int] = None) -> tuple[Path, list[dict[str, Any]], str]:
    """Train each model with the same budget (data, epochs, optimiser) over `repeats` seeds: the base
    config; returns (experiment dir, rows, printed table and verdicts against `baseline`, default
    the first model)."""
    name = f"compare-{runs.slug(base.dataset)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    experiment = build_experiment({"name": name, "kind": "compare", "base": base.model_dump(),
                                   "zip": {"model": list(models)}, "repeats": repeats})
    return run_experiment(experiment, Path(exp_dir or Path(out) / name), jobs=jobs, quiet=quiet,
                          baseline=baseline, population=population)
