"""The `tinyvision` command: thin commands that parse, call the Python API and print.

User errors (TinyVisionError) print one line on stderr and exit non-zero; a run stopped by
Ctrl-C or SIGTERM exits with 130 after saving a resumable checkpoint; a closed pipe
(`tinyvision models | head -1`) ends the command quietly.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Optional, Sequence

from ..errors import TinyVisionError
from .parser import build_parser

__all__ = ["build_parser", "entry", "main"]


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """parse_args, but `key=value` overrides may also come after flags (argparse fills a
    positional list only once, before the first flag)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    late = [t for t in extra if "=" in t and not t.startswith("-")]
    unknown = [t for t in extra if t not in late]
    target = "items" if hasattr(args, "items") else "overrides"
    if unknown or (late and not hasattr(args, target)):
        parser.error(f"unrecognized arguments: {' '.join(unknown or late)}")
    if late:
        setattr(args, target, [*getattr(args, target), *late])
    return args


class _StderrLog(logging.Handler):
    """tinyvision's log records (a folder dataset's summary, files left out) as lines on stderr;
    sys.stderr is looked up per record, so a swapped stream (tests, notebooks) gets them."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "warning: " if record.levelno >= logging.WARNING else ""
        print(f"tinyvision: {level}{record.getMessage()}", file=sys.stderr)


def _show_log() -> Callable[[], None]:
    """Show INFO and above from the `tinyvision` loggers on stderr until the returned function is
    called (the library alone shows only warnings: logging's default)."""
    logger, handler = logging.getLogger("tinyvision"), _StderrLog()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)

    return undo


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    undo_log = _show_log()
    try:
        return args.func(args)
    except TinyVisionError as exc:
        print(f"tinyvision: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tinyvision: interrupted", file=sys.stderr)
        return 130
    finally:
        undo_log()


def entry() -> None:
    import os
    import signal

    # cuBLAS reads this once, when CUDA starts: pipeline.build's setting comes too late in a
    # process whose earlier runs used CUDA (a compare or tune worker whose later run asks for
    # deterministic=true). So set it for every run, deterministic or not: a fixed workspace of
    # 8 x 4 MiB per cuBLAS handle, torch's default on H100/H200, elsewhere ~24 MiB more GPU memory.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # SIGTERM as Ctrl-C wherever no run holds the stop signals (stopping.stop_on_signals takes them
    # while runs train): one that comes while torch is imported or the data loaded ends the command
    # with 130 and "interrupted", as documented, instead of killing it by the signal
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code = main()
        sys.stdout.flush()  # a closed pipe shows here at the latest, not in the interpreter's exit
    except BrokenPipeError:  # `tinyvision models | head -1`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush writes nowhere
        code = 128 + signal.SIGPIPE  # what a shell reports for a command ended by a closed pipe
    finally:
        distributed = sys.modules.get("tinyvision.distributed")  # only a run imports it (and torch)
        if distributed is not None:
            distributed.teardown()  # a torchrun worker leaves its process group before exiting
    sys.exit(code)


if __name__ == "__main__":
    entry()
