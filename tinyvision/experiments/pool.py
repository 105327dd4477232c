"""The one process pool of experiments (--jobs) and tuning workers.

Workers are spawned (fresh interpreters: no forked torch or CUDA state) and keep SIGTERM fatal
(stopping.leave_sigterm_fatal: the pool SIGTERMs the others when one dies). A stop request in the
parent (Ctrl-C, SIGTERM) is passed to the workers as an Event: their runs stop at their next step
with a checkpoint (their StopRequest reads `interrupted()`), a call already queued to a worker
sees it and does not start, and the parent hands out nothing more.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Callable, Optional, Sequence

from ..stopping import StopRequest, stop_on_signals

_stop: Any = None  # in worker processes: an Event set when the parent is interrupted
_index: Optional[int] = None  # in worker processes: 0, 1, ... in the order the workers started


def _init_worker(stop: Any, counter: Any) -> None:
    """In each worker process: the interrupt Event, its index (which GPU it takes), SIGTERM fatal."""
    from ..stopping import leave_sigterm_fatal

    global _stop, _index
    _stop = stop
    with counter.get_lock():
        _index, counter.value = counter.value, counter.value + 1
    leave_sigterm_fatal()


def worker_device(requested: str) -> str:
    """The device a worker's run uses: with several CUDA GPUs visible, worker i takes cuda:i % count
    for a run that asks for "auto" or "cuda" (else every worker would land on GPU 0)."""
    if _index is None or requested not in ("auto", "cuda"):
        return requested
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{_index % count}" if count else requested


def interrupted() -> bool:
    """In a worker: whether the parent was interrupted (a call queued before then is not to start)."""
    return _stop is not None and _stop.is_set()


def threads_per_worker(workers: int) -> int:
    """CPU threads for each of `workers` processes, so that together they use every core once."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def _end_if_one_died(pool: ProcessPoolExecutor) -> None:
    """Every call has returned: if a worker died meanwhile (killed while idle, it may hold the call
    queue's lock), end the others now, or the pool's shutdown would wait on them for ever."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # private: no public handle
    if any(p.exitcode is not None for p in processes):
        for p in processes:
            p.terminate()


def run_in_processes(fn: Callable[..., Any], calls: Sequence[tuple], workers: int,
                     on_result: Callable[[int, Any], None], stop: Optional[StopRequest] = None) -> list[int]:
    """fn(*calls[i]) in at most `workers` spawned processes; on_result(i, result) as each returns.
    Returns the indices lost with a worker that died (the pool then fails every call not yet done;
    what they wrote is whole, by atomic writes). A stop request (`stop`: Ctrl-C or SIGTERM here)
    reaches the workers' runs (they stop at their next step with a checkpoint); calls not yet
    started never start and get no result."""
    if not calls:
        return []
    lost, context = [], get_context("spawn")
    event, counter = context.Event(), context.Value("i", 0)
    with stop_on_signals(stop) as stop, ProcessPoolExecutor(
            max_workers=min(workers, len(calls)), mp_context=context, initializer=_init_worker,
            initargs=(event, counter)) as pool:
        futures = {pool.submit(fn, *args): i for i, args in enumerate(calls)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                if future.cancelled():
                    continue
                try:
                    result = future.result()
                except BrokenProcessPool:
                    lost.append(futures[future])
                    continue
                on_result(futures[future], result)
            if stop.requested and not event.is_set():
                event.set()  # calls already in a worker's queue return without starting; running runs stop
                for future in pending:
                    future.cancel()  # the rest are never handed out
        _end_if_one_died(pool)
    return sorted(lost)
