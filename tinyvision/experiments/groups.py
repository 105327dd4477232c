"""Training an experiment's runs, one at a time or as populations (pipeline.train_runs either way).

A group is runs the planner put together (plan); each run's directory is asked what it is
(rundir.inspect_run): a finished run is skipped, a run with a checkpoint of its own resumes alone,
a population's checkpoint (in its first member's directory) continues that population whole, and
the rest train together from scratch. A run directory being written by another process is left
to it. Failures become results, not exceptions.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import rundir, runs
from ..config import RunConfig, make_config
from ..errors import TinyVisionError
from ..stopping import StopRequest
from . import pool


@dataclass(frozen=True)
class RunJob:
    point: Any  # spec.Point
    seed: int
    run_dir: Path
    config: dict[str, Any]


def run_group(group: Sequence[RunJob], threads: Optional[int] = None, quiet: bool = True, prefix: str = "",
              sources: Optional[dict[str, Any]] = None, stop: Optional[StopRequest] = None) -> list[dict[str, Any]]:
    """Train `group` (runs that can share a population; one run alone) unless done; one result per
    run. sources: model sources given in Python, by the reference their configs name; stop: the
    experiment's stop request (in a pool worker: its parent's, read through pool.interrupted)."""
    stop = stop or StopRequest(also=pool.interrupted)
    if pool.interrupted():  # queued before a stop: not to be started now
        return [_skipped(job, "not started", "the experiment was interrupted") for job in group]
    results: dict[int, dict[str, Any]] = {}
    with ExitStack() as held:
        for i, job in enumerate(group):
            job.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                held.enter_context(rundir.lock_run_dir(job.run_dir))
            except rundir.RunDirBusy as exc:  # its other writer will finish it
                results[i] = _skipped(job, "busy", str(exc))
        states = [rundir.inspect_run(job.run_dir) for job in group]
        if len(group) > 1 and states[0].population_checkpoint:  # a population killed or stopped: whole
            if results:
                return [results.get(i) or _skipped(job, "busy", "its population is busy elsewhere")
                        for i, job in enumerate(group)]
            if all(state.kind == rundir.Kind.FINISHED for state in states):  # killed after its last write
                (group[0].run_dir / runs.CHECKPOINT).unlink(missing_ok=True)
            else:
                return _train(list(group), threads, quiet, prefix, sources, stop, resume=True)
        fresh = []
        for i, (job, state) in enumerate(zip(group, states)):
            if i in results:
                continue
            if state.kind == rundir.Kind.FINISHED:
                results[i] = {**(runs.read_result(job.run_dir) or {}), "skipped": True}
            elif state.resumable and not state.population_checkpoint and (job.run_dir / runs.CONFIG).exists():
                results[i] = _train([job], threads, quiet, prefix, sources, stop, resume=True)[0]  # its own checkpoint
            else:
                rundir.reset_unfinished(job.run_dir)
                fresh.append(i)
        if fresh:
            results.update(zip(fresh, _train([group[i] for i in fresh], threads, quiet, prefix, sources, stop)))
    return [results[i] for i in range(len(group))]


def _skipped(job: RunJob, status: str, reason: str) -> dict[str, Any]:
    return {"status": status, "reason": reason, "run_dir": str(job.run_dir), "skipped": True}


def _train(jobs: list[RunJob], threads: Optional[int], quiet: bool, prefix: str, sources: Optional[dict[str, Any]],
           stop: StopRequest, resume: bool = False) -> list[dict[str, Any]]:
    """Runs (directories locked by the caller) trained as one (a population where several): new
    ones, or (resume) as their checkpoint left them. A model vmap cannot map trains its runs one at
    a time; a user error is each written run's result."""
    from ..pipeline import train_runs  # imported here: worker processes start light
    from ..training.stacked import Unstackable

    configs = [_config(job, threads, resume) for job in jobs]
    model = (sources or {}).get(configs[0].model)
    try:
        return train_runs(configs, [job.run_dir for job in jobs], resume=resume, quiet=quiet, progress_prefix=prefix,
                          model=model, stop=stop)
    except Unstackable:
        for job in jobs:
            rundir.reset_unfinished(job.run_dir)
        return [result for job in jobs for result in _train([job], threads, quiet, prefix, sources, stop)]
    except TinyVisionError as exc:
        failed = []
        for job in jobs:
            result = {"status": "failed", "reason": str(exc), "run_dir": str(job.run_dir)}
            if rundir.inspect_run(job.run_dir).kind != rundir.Kind.FINISHED:
                runs.write_result(job.run_dir, result)
            failed.append(result)
        return failed


def _config(job: RunJob, threads: Optional[int], resume: bool) -> RunConfig:
    """A run's config: on resume its config.yaml (threads and device as it began)."""
    if resume and (job.run_dir / runs.CONFIG).exists():
        return runs.read_config(job.run_dir)
    return make_config({**job.config, "threads": job.config.get("threads") or threads,
                        "device": pool.worker_device(job.config.get("device", "auto"))})


def checkpointed_populations(jobs: Sequence[RunJob], indices: Sequence[int]) -> list[list[int]]:
    """Groups of jobs[indices] that a population checkpoint names, in its member order: they
    continue as they were, whatever the population size asked for now."""
    from ..writing import member_names

    by_name = {member_names([jobs[i].run_dir])[0]: i for i in indices}
    groups: list[list[int]] = []
    for i in indices:
        state = rundir.inspect_run(jobs[i].run_dir)
        if state.population_checkpoint:
            group = [by_name.get(name) for name in state.checkpoint_members]
            if None not in group and not any(k in g for g in groups for k in group):
                groups.append(group)  # type: ignore[arg-type]
    return groups


def plan(jobs: Sequence[RunJob], indices: Sequence[int], population: Optional[int],
         workers: int = 1) -> list[list[int]]:
    """jobs[indices] in populations of at most `population` runs that can train together (None:
    as many as training.plan.auto_population gives their shape, and with several workers no more
    than keeps each of them busy). A population with a checkpoint keeps its members (it continues
    as it was, whatever the size asked for now, unless one at a time is)."""
    if population is not None and population <= 1:
        return [[i] for i in indices]
    from ..training.plan import plan_groups

    kept = checkpointed_populations(jobs, indices)
    taken = {i for group in kept for i in group}
    rest = [i for i in indices if i not in taken]
    groups = plan_groups([make_config(jobs[i].config) for i in rest], population, sharing=workers)
    if population is None and workers > 1:
        share = -(-len(rest) // workers)  # ceil: runs per worker
        groups = [group[start:start + share] for group in groups for start in range(0, len(group), share)]
    return kept + [[rest[k] for k in group] for group in groups]
