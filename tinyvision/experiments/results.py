"""Aggregate an experiment's runs: one row per point, mean and std over repeats."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import runs
from ..checkpoint import atomic_write
from ..tables import Column, num, pct, plain, secs, to_csv, to_markdown

METRICS = {  # column -> how to read it from a result
    "val_loss": lambda r: (r.get("best_val") or {}).get("loss"),
    "val_accuracy": lambda r: (r.get("best_val") or {}).get("accuracy"),
    "test_loss": lambda r: (r.get("test") or {}).get("loss"),
    "test_accuracy": lambda r: (r.get("test") or {}).get("accuracy"),
    "best_epoch": lambda r: r.get("best_epoch"),
    "seconds": lambda r: r.get("total_seconds"),
}


def _mean_std(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


_FIXED = {"point", "label", "runs", "completed", "params", "macs"} | {
    f"{m}_{s}" for m in METRICS for s in ("mean", "std", "pair")}


def point_row(point: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in results if r.get("status") == "completed"]
    row: dict[str, Any] = {"point": point["id"], "label": point["label"], **point["values"],
                           "runs": len(results), "completed": len(done),
                           "params": done[0]["params"] if done else None,
                           "macs": done[0]["macs"] if done else None}
    for name, read in METRICS.items():
        row[f"{name}_mean"], row[f"{name}_std"] = _mean_std([read(r) for r in done if read(r) is not None])
    return row


def collect(exp_dir: str | Path) -> list[dict[str, Any]]:
    """One row per point from the manifest and whatever runs have finished."""
    exp_dir = Path(exp_dir)
    manifest = json.loads((exp_dir / "manifest.json").read_text())
    rows = []
    for point in manifest["points"]:
        results = [runs.read_result(exp_dir / r["dir"]) or {"status": "pending"} for r in point["runs"]]
        rows.append(point_row(point, results))
    return rows


def _pm(fmt):
    """A formatter for a (mean, std) pair: "mean ± std", or the mean alone for a single run."""
    def show(pair):
        mean, std = pair
        if mean is None:
            return "-"
        return fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"
    return show


def table_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """Columns for the printed/Markdown table; adds (mean, std) pair keys to the rows."""
    axes = [k for k in rows[0] if k not in _FIXED] if rows else []
    name: Column = (axes[0], axes[0], plain) if len(axes) == 1 else ("label", "point", plain)
    columns: list[Column] = [name, ("completed", "runs", plain),
                             ("params", "params", num), ("macs", "MACs", num)]
    for key, header, fmt in [("val_loss", "val loss", num), ("val_accuracy", "val acc", pct),
                             ("test_loss", "test loss", num), ("test_accuracy", "test acc", pct),
                             ("best_epoch", "best epoch", lambda v: f"{v:.1f}"), ("seconds", "seconds", secs)]:
        columns.append((f"{key}_pair", header, _pm(fmt)))
    for row in rows:
        for key in METRICS:
            std = row[f"{key}_std"] if row["completed"] > 1 else None
            row[f"{key}_pair"] = (row[f"{key}_mean"], std)
    return columns


def write_tables(exp_dir: str | Path, rows: list[dict[str, Any]]) -> str:
    """Write results.csv and results.md; return the text table."""
    from ..tables import to_text

    exp_dir = Path(exp_dir)
    columns = table_columns(rows)
    csv_keys = [k for k in rows[0] if not k.endswith("_pair")] if rows else []
    atomic_write(exp_dir / "results.csv", to_csv(rows, csv_keys))
    atomic_write(exp_dir / "results.md", to_markdown(rows, columns) + "\n")
    return to_text(rows, columns)
