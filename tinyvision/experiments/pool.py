"""The one process pool of experiments (--jobs) and tuning workers.

Workers are spawned (fresh interpreters: no forked torch or CUDA state) and keep SIGTERM fatal
(runtime.leave_sigterm_fatal: the pool SIGTERMs the others when one dies). A Ctrl-C reaches the
workers too, whose runs stop at their next step with a checkpoint; the parent then hands out
nothing more, and a call already queued to a worker can see `interrupted()` and not start.
"""
from __future__ import annotations

import contextlib
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Callable, Iterator, Optional, Sequence

_stop: Any = None  # in worker processes: an Event set when the parent is interrupted
_index: Optional[int] = None  # in worker processes: 0, 1, ... in the order the workers started


def _init_worker(stop: Any, counter: Any) -> None:
    """In each worker process: the interrupt Event, its index (which GPU it takes), SIGTERM fatal."""
    from ..runtime import leave_sigterm_fatal

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


@contextlib.contextmanager
def _ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here even where it was inherited as ignored (a background job
    of a script): the workers' runs always stop on it (runtime.graceful_stop installs its handler),
    so the parent must always stop handing out work too."""
    try:
        old = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: no signals here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _end_if_one_died(pool: ProcessPoolExecutor) -> None:
    """Every call has returned: if a worker died meanwhile (killed while idle, it may hold the call
    queue's lock), end the others now, or the pool's shutdown would wait on them for ever."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # private: no public handle
    if any(p.exitcode is not None for p in processes):
        for p in processes:
            p.terminate()


def run_in_processes(fn: Callable[..., Any], calls: Sequence[tuple], workers: int,
                     on_result: Callable[[int, Any], None]) -> list[int]:
    """fn(*calls[i]) in at most `workers` spawned processes; on_result(i, result) as each returns.
    Returns the indices lost with a worker that died (the pool then fails every call not yet done;
    what they wrote is whole, by atomic writes)."""
    if not calls:
        return []
    lost, context = [], get_context("spawn")
    stop, counter = context.Event(), context.Value("i", 0)
    with _ctrl_c_raises(), ProcessPoolExecutor(max_workers=min(workers, len(calls)), mp_context=context,
                                               initializer=_init_worker, initargs=(stop, counter)) as pool:
        futures = {pool.submit(fn, *args): i for i, args in enumerate(calls)}
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    lost.append(futures[future])
                    continue
                on_result(futures[future], result)
            _end_if_one_died(pool)
        except KeyboardInterrupt:  # the workers got the Ctrl-C too and stop at their next step
            stop.set()  # calls already handed to a worker's queue return without starting
            pool.shutdown(cancel_futures=True)  # the rest are never handed out
            raise
    return sorted(lost)
