"""The run directory: the permanent record of one training run.

    config.yaml          resolved config; `tinyvision train --config config.yaml` re-runs it
    metrics.csv          one row per epoch (train/val loss, accuracy, error, lr, seconds)
    result.json          status, test metrics, parameter count, timings, seed, versions
    model.safetensors    best weights + metadata (spec, classes, input shape, normalisation)
    checkpoint.safetensors   full training state for --resume

Every file is written atomically; result.json with a final status is written last, so a
directory whose result says "completed" is complete. One process at a time writes a run
directory (lock_run_dir); a kill leaves at most hidden ".*.tmp" files, which readers never open.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import re
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy
import torch

from .checkpoint import atomic_write
from .config import RunConfig, dump_config, load_config
from .errors import DataError, TinyVisionError

CONFIG, METRICS, RESULT = "config.yaml", "metrics.csv", "result.json"
WEIGHTS, CHECKPOINT = "model.safetensors", "checkpoint.safetensors"


def slug(text: str) -> str:
    """A file-name-safe version of text."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "run"


def new_run_dir(root: str | Path, cfg: RunConfig) -> Path:
    """A fresh, unique directory under root named after dataset, model and time."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{slug(cfg.dataset)}-{slug(cfg.model)}-{stamp}"
    for i in range(1000):
        path = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise TinyVisionError(f"could not create a new run directory under {root}")


def claim_run_dir(path: str | Path) -> Path:
    """Use `path` for a new run; refuse a directory that already holds a run (nothing is overwritten)."""
    path = Path(path)
    if (path / RESULT).exists() or (path / CONFIG).exists():
        raise TinyVisionError(f"{path} already holds a run; choose another --run-dir or use --resume")
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunDirBusy(TinyVisionError):
    """Another process is writing this run directory."""


_HELD: dict[str, list[int]] = {}  # real path -> [fd, depth]: the locks this process holds


@contextmanager
def lock_run_dir(run_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the directory while writing it; re-entrant within a process.

    A second process is refused (RunDirBusy) rather than made to wait. The kernel drops the lock
    when its holder dies, even by SIGKILL, so a crash leaves nothing to clean up.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one writer per directory is up to the user
        yield
        return
    key = os.path.realpath(run_dir)
    if key in _HELD:
        _HELD[key][1] += 1
    else:
        fd = os.open(key, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirBusy(f"{run_dir} is being written by another process; wait for it to finish "
                             "(nothing was changed)") from None
        except OSError:  # a file system without locks (some network ones): go on unlocked
            pass
        _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            os.close(_HELD.pop(key)[0])  # closing the last descriptor releases the lock


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    atomic_write(run_dir / CONFIG, dump_config(cfg))


def read_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise DataError(f"{run_dir}: not a run directory (no {CONFIG})")
    return load_config(path)


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """Rewrite metrics.csv whole (a few KB) so it is never half-written; no rows: no file."""
    if not rows:
        (run_dir / METRICS).unlink(missing_ok=True)
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(run_dir / METRICS, buf.getvalue())


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    atomic_write(run_dir / RESULT, json.dumps(result, indent=2, default=_json_default) + "\n")


def read_result(run_dir: str | Path) -> Optional[dict[str, Any]]:
    path = Path(run_dir) / RESULT
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def is_complete(run_dir: str | Path) -> bool:
    result = read_result(run_dir)
    return bool(result) and result.get("status") == "completed"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (Path, torch.device)):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def code_hash() -> str:
    """sha256 over the package's source files: which code produced a result."""
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def environment() -> dict[str, str]:
    from . import __version__

    return {"tinyvision": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "code_hash": code_hash()}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Stopwatch:
    """Wall-clock seconds since construction."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
