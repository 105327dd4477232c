"""Optional TensorBoard event files from metrics.csv; the run directory stays the primary record."""
from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

from .. import runs
from ..errors import DataError, TinyVisionError

TENSORBOARD = "tensorboard"
# metrics.csv column -> TensorBoard tag; accuracy and error as fractions, loss in nats
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_accuracy": "accuracy/train",
        "val_accuracy": "accuracy/val", "train_error": "error/train", "val_error": "error/val",
        "lr": "lr", "seconds": "seconds/train_epoch", "val_seconds": "seconds/val"}


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def write_tensorboard(run_dir: str | Path) -> Path:
    """Write metrics.csv (and the test result) as scalars into run_dir/tensorboard/; returns that folder.

    Replaces event files from an earlier call, so calling it twice does not duplicate points.
    """
    if not tensorboard_available():
        raise TinyVisionError("TensorBoard export needs the tensorboard package: "
                              "pip install 'tinyvision[tensorboard]'")
    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(run_dir)
    rows = runs.read_metrics(run_dir)
    if not rows:
        raise DataError(f"{run_dir}: no {runs.METRICS} to export")
    result = runs.read_result(run_dir) or {}
    target = run_dir / TENSORBOARD
    staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=".tensorboard."))  # swapped in when complete
    try:
        writer = SummaryWriter(log_dir=str(staging))
        for row in rows:
            step = int(row["epoch"])
            for column, tag in TAGS.items():
                if column in row:
                    writer.add_scalar(tag, row[column], step)
        test, last = result.get("test") or {}, int(rows[-1]["epoch"])
        for key in ("loss", "accuracy", "error"):
            if key in test:
                writer.add_scalar(f"{key}/test", test[key], last)
        writer.close()
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
