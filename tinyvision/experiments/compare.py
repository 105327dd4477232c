"""Compare models on one dataset with the same budget: same data, epochs, optimiser and seed."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from .. import runs
from ..config import RunConfig
from ..pipeline import load_data, train
from ..tables import Column, num, pct, plain, secs

COMPARE_COLUMNS: list[Column] = [
    ("model", "model", plain), ("params", "params", num), ("best_epoch", "best epoch", plain),
    ("val_loss", "val loss", num), ("val_accuracy", "val acc", pct),
    ("test_loss", "test loss", num), ("test_accuracy", "test acc", pct),
    ("seconds", "seconds", secs), ("status", "status", plain),
]


def compare_row(result: dict[str, Any]) -> dict[str, Any]:
    """The table row of one run's result."""
    best, test = result.get("best_val") or {}, result.get("test") or {}
    return {"model": result["model"], "params": result.get("params"),
            "best_epoch": result.get("best_epoch"), "val_loss": best.get("loss"),
            "val_accuracy": best.get("accuracy"), "test_loss": test.get("loss"),
            "test_accuracy": test.get("accuracy"), "seconds": result.get("total_seconds"),
            "status": result.get("status"), "run_dir": result.get("run_dir")}


def compare(models: Sequence[str], base: RunConfig, *, out: str | Path = "runs",
            quiet: bool = False) -> tuple[Path, list[dict[str, Any]]]:
    """Train each model with the base config; returns (experiment dir, one row per model)."""
    configs = [base.model_copy(update={"model": m}) for m in models]
    for cfg in configs:  # validate every model before training any
        RunConfig.model_validate(cfg.model_dump())
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    exp_dir = runs.claim_run_dir(Path(out) / f"compare-{runs.slug(base.dataset)}-{stamp}")
    data = load_data(base)
    rows = []
    for i, cfg in enumerate(configs):
        run_dir = exp_dir / f"{i:02d}-{runs.slug(cfg.model)}"
        result = train(cfg, run_dir=run_dir, data=data, quiet=quiet, progress_prefix=f"[{cfg.model}] ")
        rows.append(compare_row(result))
    return exp_dir, rows
