"""The run directory: the permanent record of one training run.

    config.yaml          resolved config; `tinyvision train --config config.yaml` re-runs it
    metrics.csv          one row per epoch (train/val loss, accuracy, error, lr, seconds); epoch 0 =
                         before training (eval_before); test_* columns instead of val_* with val_size=0
    steps.csv            with log_every=N: a row every N steps (step, epoch, batches, train loss/accuracy, lr)
    result.json          status, test metrics, parameter count, timings, seed, versions
    model.safetensors    best weights + metadata (spec, classes, input shape, normalisation)
    predictions.safetensors  test-set probabilities and labels, the test images the report shows
                         and a labelled grid of training images
    checkpoint.safetensors   full training state for --resume

    model_source.py      a copy of the model's source file (your own model class; models.source)

Every file is written atomically; result.json with a final status is written last, so a
directory whose result says "completed" is complete. What a directory is (new, running,
finished...) and who may write it: rundir.py.
"""
from __future__ import annotations

import csv
import functools
import errno
import hashlib
import io
import json
import platform
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy
import torch

from .files import atomic_write, load_state, save_state
from .config import RunConfig, dump_config, load_config
from .errors import ConfigError, DataError, TinyVisionError
from .yamlfile import YamlError, read_yaml_file

if TYPE_CHECKING:
    from .evaluate import Predictions
    from .training.loop import Member, Outcome

CONFIG, METRICS, RESULT = "config.yaml", "metrics.csv", "result.json"
WEIGHTS, CHECKPOINT = "model.safetensors", "checkpoint.safetensors"
WEIGHTS_FORMAT = "tinyvision-weights-1"  # model.safetensors' "format" (writing.py): the one load_model reads
PREDICTIONS = "predictions.safetensors"
MODEL_SOURCE = "model_source.py"  # a copy of a user model's file (models.source)
STEPS = "steps.csv"
TEST_AS_VALIDATION = "test (used as validation)"
_VAL_COLUMNS = ("val_loss", "val_accuracy", "val_error", "val_seconds")


def slug(text: str) -> str:
    """A file-name-safe version of text."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "run"


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    atomic_write(run_dir / CONFIG, dump_config(cfg))


def read_config(run_dir: str | Path) -> RunConfig:
    """The run's config.yaml; one that this version cannot read (damaged, empty, or with fields or
    values of another version) is a DataError naming the file and the version that wrote it."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise DataError(f"{run_dir}: not a run directory (no {CONFIG})")
    try:
        return load_config(path)
    except (ConfigError, YamlError) as exc:
        message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        raise DataError(message + _written_by(run_dir)) from None


def _written_by(run_dir: str | Path) -> str:
    """"; written by tinyvision X, this is Y" where result.json names another version, else ""."""
    try:
        written = ((read_result(run_dir) or {}).get("versions") or {}).get("tinyvision")
    except (DataError, AttributeError):
        return ""
    return f"; written by tinyvision {written}, this is {version()}" if written and written != version() else ""


def val_name(cfg: RunConfig) -> str:
    """What the per-epoch evaluation runs on, as metrics.csv names its columns: val or test."""
    return "test" if cfg.validates_on_test else "val"


def validation_label(cfg: RunConfig, val_images: int) -> str:
    """result.json's "validation": what the per-epoch evaluation and early stopping watched."""
    return TEST_AS_VALIDATION if cfg.validates_on_test else f"validation split ({val_images} images)"


def evaluated_weights(best_epoch: int, epochs_run: int, restore_best: bool) -> str:
    """result.json's "evaluated_weights": which epoch's weights the test score and model file hold."""
    if restore_best and best_epoch:
        return f"best epoch {best_epoch} (lowest validation loss)"
    return f"last epoch {epochs_run}"


def write_metrics(run_dir: Path, rows: list[dict], val_name: str = "val") -> None:
    """Rewrite metrics.csv whole (a few KB) so it is never half-written; no rows: no file.
    val_name="test": the val_* columns are written as test_* (validated on the test set)."""
    if val_name != "val":
        rows = [{_rename(k, "val_", f"{val_name}_"): v for k, v in row.items()} for row in rows]
    _write_rows(run_dir / METRICS, rows)


def _rename(key: str, old: str, new: str) -> str:
    return new + key.removeprefix(old) if key.startswith(old) else key


def _write_rows(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.unlink(missing_ok=True)
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """metrics.csv's rows; test_* columns (val_size=0) come back under the val_* names every
    reader uses (result.json's "validation" says what they are)."""
    rows = _read_rows(Path(run_dir) / METRICS)
    if rows and "val_loss" not in rows[0] and "test_loss" in rows[0]:
        rows = [{_rename(k, "test_", "val_"): v for k, v in row.items()} for row in rows]
    return rows


def _read_rows(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_steps(run_dir: Path, rows: list[dict]) -> None:
    """steps.csv (log_every), rewritten whole like metrics.csv; no rows: no file."""
    _write_rows(run_dir / STEPS, rows)


def read_steps(run_dir: str | Path) -> list[dict[str, float]]:
    return _read_rows(Path(run_dir) / STEPS)


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    atomic_write(run_dir / RESULT, json.dumps(result, indent=2, default=_json_default) + "\n")


def read_result(run_dir: str | Path) -> Optional[dict[str, Any]]:
    path = Path(run_dir) / RESULT
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (ValueError, OSError) as exc:  # JSONDecodeError, UnicodeDecodeError, a folder of that name
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(result, dict):
        raise DataError(f"{path}: expected a JSON object (a run's result), found a {type(result).__name__}")
    return result


def is_complete(run_dir: str | Path) -> bool:
    result = read_result(run_dir)
    return bool(result) and result.get("status") == "completed"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (Path, torch.device)):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@functools.cache  # the package does not change while it runs: hashed once per process
def code_hash() -> str:
    """sha256 over the package's source files: which code produced a result."""
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def version() -> str:
    """tinyvision's installed version (package metadata: importing the package is not needed)."""
    try:
        return metadata.version("tinyvision")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def environment() -> dict[str, str]:
    return {"tinyvision": version(), "torch": torch.__version__, "numpy": numpy.__version__,
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


# -- result.json -------------------------------------------------------------------------------

def build_result(outcome: "Outcome", state: "Member", *, cfg: RunConfig, run_dir: Optional[Path],
                 facts: dict[str, Any]) -> dict[str, Any]:
    """result.json's content for a run that ended with `outcome`; facts: what only the live run
    knows (spec, params, macs, device, precision, classes...). The test metrics are added later."""
    best = next((r for r in state.history if r["epoch"] == state.best_epoch), None) if state.best_epoch else None
    trained = [r for r in state.history if r["epoch"] >= 1]  # not eval_before's epoch-0 row
    seconds = sum(r["seconds"] for r in trained)
    result = {"status": outcome.status, "run_dir": str(run_dir), "dataset": cfg.dataset, "model": cfg.model,
              **facts, "seed": cfg.seed, "threads": torch.get_num_threads(),
              "epochs_run": state.epoch, "best_epoch": state.best_epoch, "stopped_early": state.stopped_early,
              "deterministic": torch.are_deterministic_algorithms_enabled(),
              "best_val": {k.removeprefix("val_"): best[k] for k in ("val_loss", "val_accuracy", "val_error")}
              if best else None,
              "train_seconds": seconds, "mean_epoch_seconds": seconds / len(trained) if trained else None,
              "versions": environment()}
    if outcome.reason and outcome.status != "completed":
        result["reason"] = outcome.reason
    return result


# -- out of room -------------------------------------------------------------------------------

_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}


def mark_failed(run_dir: Optional[Path], exc: BaseException, started: str) -> BaseException:
    """For an exhausted resource (disk full, device out of memory): mark the run "failed" with a
    one-line reason (best effort: the disk may still be full) and return the ResourceError to raise.
    Any other exception is returned as it is (a bug keeps its traceback)."""
    if isinstance(exc, OSError) and exc.errno not in _NO_ROOM:
        return exc
    if isinstance(exc, OSError):
        reason = f"no space left to write {Path(exc.filename).name if exc.filename else 'the run'} " \
                 f"({exc.strerror}); free some space and resume with --resume"
    else:
        reason = "out of device memory; use a smaller batch_size or eval_batch_size, a smaller model, " \
                 "or device=cpu, then resume with --resume"
    if run_dir is not None:
        try:
            write_result(run_dir, {"status": "failed", "reason": reason, "started": started, "finished": now()})
        except OSError:
            pass  # still no room: result.json keeps "running"; the checkpoint is what matters
    return ResourceError(f"{run_dir or 'run'}: failed: {reason}")


class ResourceError(TinyVisionError):
    """The machine ran out of disk space or device memory during a run."""


# -- predictions.safetensors -------------------------------------------------------------------

GALLERY = 32  # test images kept for the report: the first ones, and the most confident mistakes
GRID_IMAGES = 64  # training images kept for the report's labelled grid, a few of each class


@dataclass
class TestPredictions:
    """A run's test-set outputs as written when it ended; images only for `index` (the gallery).
    grid_*: the training images the report's grid shows, their labels and the class names (None
    for runs written before they were kept)."""

    probs: torch.Tensor  # (N, K) softmax probabilities (with the run's TTA)
    labels: torch.Tensor  # (N,)
    index: torch.Tensor  # (G,) test-set positions of the gallery images
    images: torch.Tensor  # (G, C, H, W) raw pixels as stored by the dataset
    classes: tuple[str, ...]
    grid_images: Optional[torch.Tensor] = None  # (M, C, H, W) raw training pixels, M <= GRID_IMAGES
    grid_labels: Optional[torch.Tensor] = None  # (M,)
    grid_classes: Optional[tuple[str, ...]] = None

    @property
    def predicted(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)

    def gallery(self, positions: list[int]) -> torch.Tensor:
        """The stored images at these test-set positions (each must be in the gallery)."""
        where = {int(i): k for k, i in enumerate(self.index)}
        return self.images[[where[p] for p in positions]]


def grid_rows(labels: torch.Tensor | numpy.ndarray, num_classes: int, n: int = GRID_IMAGES) -> list[int]:
    """Up to n rows of a split, a few of each class: each class's earliest rows, taken round-robin
    over the classes (so every class shows before any shows twice), ordered by class then row."""
    y = numpy.asarray(labels)
    order = numpy.argsort(y, kind="stable")  # rows grouped by class, each group in row order
    starts = numpy.concatenate([[0], numpy.cumsum(numpy.bincount(y, minlength=num_classes))])
    chosen: list[int] = []
    depth = 0
    while len(chosen) < min(n, len(y)):
        for k in range(num_classes):
            if starts[k] + depth < starts[k + 1] and len(chosen) < n:
                chosen.append(int(order[starts[k] + depth]))
        depth += 1
    return sorted(chosen, key=lambda i: (int(y[i]), i))


def write_predictions(run_dir: Path, pred: "Predictions", test_images: torch.Tensor, classes: tuple[str, ...],
                      grid_from: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> None:
    """predictions.safetensors: the test probabilities and labels, the gallery's test images and,
    given the training split's (images, labels) as grid_from, the grid_rows of it for the report
    (64 small images: the report draws them; training draws no figure)."""
    from .evaluate import confident_mistakes  # evaluate needs torch models: only the writer pays

    first = list(range(min(GALLERY, len(pred.labels))))
    index = sorted(set(first) | set(confident_mistakes(pred.probs, pred.labels, GALLERY)))
    state = {"probs": pred.probs.float(), "labels": pred.labels, "index": torch.tensor(index, dtype=torch.long),
             "images": torch.as_tensor(test_images[index]), "classes": list(classes)}
    if grid_from is not None:
        images, labels = grid_from
        rows = grid_rows(labels, len(classes))
        state.update(grid_images=torch.as_tensor(images[rows]), grid_labels=torch.as_tensor(labels[rows]).long(),
                     grid_classes=list(classes))
    save_state(run_dir / PREDICTIONS, state)


def read_predictions(run_dir: str | Path) -> TestPredictions:
    """predictions.safetensors of a completed run; a missing or foreign file is a DataError. The
    grid_* fields are None where the run kept no grid (written before tinyvision kept one)."""
    path = Path(run_dir) / PREDICTIONS
    if not path.exists():
        raise DataError(f"{path}: no such file (runs written before tinyvision 0.2 have none)")
    saved = load_state(path)
    try:
        grid_classes = saved.get("grid_classes")
        return TestPredictions(saved["probs"], saved["labels"], saved["index"], saved["images"],
                               tuple(saved["classes"]), saved.get("grid_images"), saved.get("grid_labels"),
                               tuple(grid_classes) if grid_classes is not None else None)
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a tinyvision predictions file ({type(exc).__name__}: {exc})") from None


# -- directories of runs -----------------------------------------------------------------------

def claim_record_dir(directory: str | Path, record_file: str, record: dict[str, Any], *, what: str,
                     hint: str) -> Path:
    """Create, or re-open, a directory of runs (an experiment, a tuning study) made from `record`,
    kept as YAML in directory/record_file. One holding a different record is refused, unchanged:
    "DIR holds a different WHAT; choose another HINT"."""
    import yaml

    directory = Path(directory)
    path, text = directory / record_file, yaml.safe_dump(record, sort_keys=False)
    if path.exists():
        try:
            held = read_yaml_file(path)
        except YamlError as exc:  # damaged, or not this version's
            raise DataError(f"{exc}; choose another {hint} (nothing was changed)") from None
        if held != yaml.safe_load(text):
            raise TinyVisionError(f"{directory} holds a different {what}; choose another {hint} "
                                  "(nothing was changed)")
        return directory
    make_dirs(directory)
    atomic_write(path, text)
    return directory


def make_dirs(directory: str | Path) -> Path:
    """The folder and its parents; one that cannot be made (a file in the way, no permission) is one line."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TinyVisionError(f"cannot create the folder {directory}: {exc.strerror or exc}") from None
    return Path(directory)


def copy_run(src: str | Path, dst: str | Path) -> Path:
    """Copy a run's config, metrics, weights and result.json (last) into dst, each file replaced
    atomically; a checkpoint in dst is removed (the copy is a record, not a run to resume)."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / CHECKPOINT).unlink(missing_ok=True)
    for name in (CONFIG, METRICS, STEPS, WEIGHTS, RESULT):
        if name != STEPS or (src / name).exists():  # steps.csv only with log_every
            atomic_write(dst / name, (src / name).read_bytes())
    return dst
