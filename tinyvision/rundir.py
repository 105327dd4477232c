"""What a run directory is, and who may write it: the one place that decides.

    state = inspect_run(path)   # absent, empty, running, finished, failed or foreign
    state.resumable             # running or failed, with a checkpoint to continue from

Every command asks `inspect_run` (train, --resume, experiments, torchrun relaunches, load, report)
instead of testing for files itself. A directory is claimed for a new run only when absent or
empty; it is written by one process at a time (lock_run_dir), and a kill leaves at most hidden
".*.tmp" files, removed by the next writer (open_run_dir).
"""
from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from . import runs
from .errors import DataError, TinyVisionError
from .files import TEMP_SUFFIX, read_labels, remove_temp_files

if TYPE_CHECKING:
    from .config import RunConfig

FINISHED_STATUSES = frozenset({"completed", "diverged", "pruned"})  # trained to an end: never redone


class Kind(str, Enum):
    ABSENT = "absent"  # no such path
    EMPTY = "empty"  # a folder with nothing of a run in it (a killed writer's temporary files at most)
    RUNNING = "running"  # a run's config, no final result: being written, killed or interrupted
    FINISHED = "finished"  # result.json says completed, diverged or pruned
    FAILED = "failed"  # result.json says failed (out of memory or disk, a bad input found late)
    FOREIGN = "foreign"  # a file, or a folder holding other things than a run


@dataclass(frozen=True)
class RunDirState:
    path: Path
    kind: Kind
    status: Optional[str] = None  # result.json's status (None: no result; "unreadable": damaged)
    checkpoint_members: tuple[str, ...] = ()  # the runs its checkpoint holds (several: a population's)

    @property
    def has_checkpoint(self) -> bool:
        return bool(self.checkpoint_members)

    @property
    def resumable(self) -> bool:
        """Unfinished, with a checkpoint to continue from."""
        return self.kind in (Kind.RUNNING, Kind.FAILED) and self.has_checkpoint

    @property
    def is_run(self) -> bool:
        return self.kind in (Kind.RUNNING, Kind.FINISHED, Kind.FAILED)

    @property
    def population_checkpoint(self) -> bool:
        return len(self.checkpoint_members) > 1


def inspect_run(path: str | Path) -> RunDirState:
    """What `path` is, from the files a run writes (config.yaml, result.json, checkpoint)."""
    path = Path(path)
    if not path.exists():
        return RunDirState(path, Kind.ABSENT)
    if not path.is_dir():
        return RunDirState(path, Kind.FOREIGN)
    members = _checkpoint_members(path)
    has_config, has_result = (path / runs.CONFIG).exists(), (path / runs.RESULT).exists()
    if not has_config and not has_result:
        others = [p for p in path.iterdir() if not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX))]
        return RunDirState(path, Kind.EMPTY if not others else Kind.FOREIGN)
    try:
        status = (runs.read_result(path) or {}).get("status") if has_result else None
    except DataError:
        status = "unreadable"
    if status in FINISHED_STATUSES:
        return RunDirState(path, Kind.FINISHED, status, members)
    if status == "failed":
        return RunDirState(path, Kind.FAILED, status, members)
    return RunDirState(path, Kind.RUNNING, status, members)


def _checkpoint_members(path: Path) -> tuple[str, ...]:
    """The runs the directory's checkpoint names in its header (a checkpoint of an earlier version,
    which names none: this run alone); () without a checkpoint."""
    checkpoint = path / runs.CHECKPOINT
    if not checkpoint.exists():
        return ()
    return tuple(read_labels(checkpoint).get("members") or [path.name])


# -- claiming and locking -----------------------------------------------------------------------

def new_run_dir(root: str | Path, cfg: "RunConfig") -> Path:
    """A fresh, unique directory under root named after dataset, model and time."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    model = cfg.model.removeprefix("python:").rpartition("/")[2]  # a file's name, not its folders
    base = Path(root) / f"{runs.slug(cfg.dataset)}-{runs.slug(model)}-{stamp}"
    for i in range(1000):
        path = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as exc:  # a file on the way (NotADirectoryError), no permission, a read-only disk
            raise TinyVisionError(f"cannot create a run directory under {root}: {exc.strerror or exc}") from None
    raise TinyVisionError(f"could not create a new run directory under {root}")


def claim_run_dir(path: str | Path) -> Path:
    """Use `path` for a new run: it must be absent or empty (nothing already there is overwritten)."""
    state = inspect_run(path)
    if state.is_run:
        raise TinyVisionError(f"{path} already holds a run; choose another --run-dir or use --resume")
    if state.kind == Kind.FOREIGN:
        raise TinyVisionError(f"{path} holds files that are not a tinyvision run; choose an empty or new --run-dir")
    return runs.make_dirs(state.path)


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


def open_run_dir(run_dir: str | Path | None, out: str | Path, cfg: "RunConfig", *, resume: bool,
                 held: ExitStack) -> Path:
    """The writer's directory, locked for as long as `held` is open: the run's own directory when
    resuming (leftovers of a killed writer removed), else a new one claimed with config.yaml."""
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(out, cfg)
    if not resume:
        claim_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    held.enter_context(lock_run_dir(run_dir))
    remove_temp_files(run_dir)  # what a killed writer left; the lock says none is writing now
    if not resume:
        claim_run_dir(run_dir)  # again under the lock: another process may have claimed it meanwhile
        runs.write_config(run_dir, cfg)
    return run_dir


def reset_unfinished(run_dir: Path) -> None:
    """Remove what an unfinished run without a checkpoint left (only tinyvision's own files)."""
    for name in (runs.CONFIG, runs.METRICS, runs.STEPS, runs.RESULT, runs.WEIGHTS, runs.CHECKPOINT,
                 runs.PREDICTIONS, runs.MODEL_SOURCE):
        (run_dir / name).unlink(missing_ok=True)

