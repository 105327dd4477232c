"""A request to stop training at the next step: a value passed down to the loop, never an exception.

    stop = StopRequest()
    with stop_on_signals(stop):     # Ctrl-C / SIGTERM set it instead of ending the process
        train_runs(cfgs, stop=stop)  # the loop polls stop.requested after every step

The run ends as "interrupted" with a checkpoint; commands then exit with EXIT_INTERRUPTED.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Any, Callable, Iterator, Optional

EXIT_INTERRUPTED = 130  # documented exit code of a run stopped by Ctrl-C / SIGTERM


class StopRequest:
    """Set once (by a signal handler, a caller or a test); read by the loop after every step.
    `also`: another source of the same request (a pool worker's: its parent was stopped)."""

    def __init__(self, also: Optional[Callable[[], bool]] = None) -> None:
        self._requested = False
        self._also = also

    @property
    def requested(self) -> bool:
        if not self._requested and self._also is not None and self._also():
            self._requested = True
        return self._requested

    def set(self) -> None:
        self._requested = True


# Signals that stop a run at its next step with a checkpoint (pool workers: leave_sigterm_fatal).
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM]


def leave_sigterm_fatal() -> None:
    """For a process-pool worker (experiments, tuning): only Ctrl-C stops its run gracefully. When a
    worker dies the pool SIGTERMs the others (their queues may be locked for good); one that took it
    as a request to stop at its next step would then wait on those queues forever."""
    global STOP_SIGNALS
    STOP_SIGNALS = [signal.SIGINT]


@contextlib.contextmanager
def stop_on_signals(stop: Optional[StopRequest] = None) -> Iterator[StopRequest]:
    """Within the block a first stop signal sets `stop` (a new one if None, yielded) instead of
    ending the process; further ones change nothing (the save is already coming). Outside the main
    thread signals cannot be handled: the request is only set by whoever holds it."""
    stop = stop or StopRequest()

    def request(signum: int, frame: Any) -> None:
        stop.set()

    try:
        old = {sig: signal.signal(sig, request) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread
        yield stop
        return
    try:
        yield stop
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
