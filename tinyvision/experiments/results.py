"""Aggregate an experiment's runs: one row per point with n, mean, std and a 95% confidence interval
of each metric over its seeds; and, where one thing varies, each point against a reference point:
the difference with its CI, Welch's p-value (Holm-corrected over the pairs) and a verdict sentence.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .. import runs
from ..checkpoint import atomic_write
from ..errors import ConfigError
from ..stats import Difference, compare, holm, summarize, verdict
from ..tables import Column, label, mean_pm, num, pct, plain, secs, to_csv, to_markdown, to_text

METRICS: dict[str, Callable[[dict], Any]] = {  # column -> how to read it from a result
    "val_loss": lambda r: (r.get("best_val") or {}).get("loss"),
    "val_accuracy": lambda r: (r.get("best_val") or {}).get("accuracy"),
    "test_loss": lambda r: (r.get("test") or {}).get("loss"),
    "test_accuracy": lambda r: (r.get("test") or {}).get("accuracy"),
    "best_epoch": lambda r: r.get("best_epoch"),
    "seconds": lambda r: r.get("total_seconds"),
}
STATS = ("n", "mean", "std", "ci_low", "ci_high")  # per metric, in results.csv
# the differences a verdict is given for: metric -> (words, higher is better, scale, unit)
VERDICT_METRICS = {"test_accuracy": ("test accuracy", True, 100.0, " points"),
                   "test_loss": ("test loss", False, 1.0, "")}
_FIXED = {"point", "label", "runs", "completed", "params", "macs"} | {
    f"{m}_{s}" for m in METRICS for s in (*STATS, "pair", "ci")}


def _number(value: float) -> Optional[float]:
    return None if value is None or math.isnan(value) else value


def point_row(point: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The point's row: its values, run counts, size, and n/mean/std/CI of every metric; the
    per-seed values stay in row["_values"] for the comparisons (never written to a file)."""
    done = [r for r in results if r.get("status") == "completed"]
    row: dict[str, Any] = {"point": point["id"], "label": point["label"], **point["values"],
                           "runs": len(results), "completed": len(done),
                           "params": done[0]["params"] if done else None,
                           "macs": done[0]["macs"] if done else None, "_values": {}}
    for name, read in METRICS.items():
        values = [v for r in done if (v := read(r)) is not None]
        summary = summarize(values)
        row["_values"][name] = values
        row.update({f"{name}_n": summary.n, f"{name}_mean": _number(summary.mean),
                    f"{name}_std": _number(summary.std), f"{name}_ci_low": _number(summary.ci_low),
                    f"{name}_ci_high": _number(summary.ci_high)})
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


def axes_of(rows: list[dict[str, Any]]) -> list[str]:
    """The varied fields (the row keys that are not statistics)."""
    return [k for k in rows[0] if k not in _FIXED and not k.startswith(("_", "diff_", "p_", "verdict_"))] \
        if rows else []


# -- differences from a reference point ---------------------------------------------------------

@dataclass
class Comparisons:
    """Each point against the reference, per verdict metric; p-values Holm-corrected within a metric."""

    reference: str
    differences: dict[str, list[Difference]]  # metric -> one per other point, in row order

    def sentences(self) -> list[str]:
        corrected = len(next(iter(self.differences.values()), [])) > 1
        out = []
        for metric, diffs in self.differences.items():
            _, _, scale, unit = VERDICT_METRICS[metric]
            out += [verdict(d, scale=scale, unit=unit, corrected=corrected) for d in diffs]
        return out

    def heading(self) -> str:
        pairs = len(next(iter(self.differences.values()), []))
        how = "p-values Holm-corrected over the {} pairs".format(pairs) if pairs > 1 else "one pair, no correction needed"
        return (f"Differences from {self.reference} (difference of means, 95% CI, Welch's t-test; {how}; "
                "at p < 0.05):")


def compare_points(rows: list[dict[str, Any]], baseline: Optional[str] = None) -> Optional[Comparisons]:
    """Every point against the reference (`baseline`: a point's label or id; default the first),
    for an experiment that varies one thing; None for a grid of several varied fields."""
    axes = axes_of(rows)
    if len(rows) < 2 or len(axes) > 1:
        return None
    reference = _reference(rows, baseline)
    others = [r for r in rows if r is not reference]
    differences = {}
    for metric, (words, higher, _, _) in VERDICT_METRICS.items():
        diffs = [compare(r["_values"][metric], reference["_values"][metric], name_a=point_name(r),
                         name_b=point_name(reference), metric=words, higher_is_better=higher) for r in others]
        differences[metric] = holm(diffs)
    return Comparisons(point_name(reference), differences)


def point_name(row: dict[str, Any]) -> str:
    """What a sentence calls the point: the varied value ("digits-cnn", "0.001"), else its label."""
    axes = axes_of([row])
    return str(row[axes[0]]) if len(axes) == 1 else str(row["label"])


def _reference(rows: list[dict[str, Any]], baseline: Optional[str]) -> dict[str, Any]:
    if baseline is None:
        return rows[0]
    for row in rows:
        if baseline in (point_name(row), str(row["label"]), str(row["point"])):
            return row
    raise ConfigError(f"--baseline {baseline!r} is not a point of this experiment "
                      f"({', '.join(point_name(r) for r in rows)})")


def _add_difference_columns(rows: list[dict[str, Any]], comparisons: Comparisons) -> None:
    for metric, diffs in comparisons.differences.items():
        _, _, scale, unit = VERDICT_METRICS[metric]
        by_name = {d.name_a: d for d in diffs}
        for row in rows:
            d = by_name.get(point_name(row))
            row.update({f"diff_{metric}": _number(d.diff) if d else None,
                        f"diff_{metric}_ci_low": _number(d.ci_low) if d else None,
                        f"diff_{metric}_ci_high": _number(d.ci_high) if d else None,
                        f"p_{metric}": _number(d.p_value) if d else None,
                        f"p_holm_{metric}": _number(d.p_adjusted) if d else None,
                        f"verdict_{metric}": verdict(d, scale=scale, unit=unit, corrected=len(diffs) > 1)
                        if d else ("reference" if point_name(row) == comparisons.reference else "")})


# -- tables ------------------------------------------------------------------------------------

def _ci(fmt: Callable[[Any], str]) -> Callable[[Any], str]:
    def show(pair: tuple[Any, Any]) -> str:
        low, high = pair
        return "-" if low is None or high is None else f"{fmt(low)} to {fmt(high)}"
    return show


def table_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """Columns for the printed/Markdown table: mean ± std of each metric, n, and the 95% CI of
    the test metrics; adds the (mean, std) and (low, high) pair keys to the rows."""
    axes = axes_of(rows)
    name: Column = (axes[0], axes[0], label) if len(axes) == 1 else ("label", "point", label)
    columns: list[Column] = [name, ("completed", "runs", plain), ("params", "params", num), ("macs", "MACs", num)]
    for key, header, fmt in [("val_loss", "val loss", num), ("val_accuracy", "val acc", pct),
                             ("test_loss", "test loss", num), ("test_accuracy", "test acc", pct),
                             ("best_epoch", "best epoch", lambda v: f"{v:.1f}"), ("seconds", "seconds", secs)]:
        columns.append((f"{key}_pair", f"{header} (mean ± std)" if key == "test_accuracy" else header,
                        mean_pm(fmt)))
        if key in VERDICT_METRICS:
            columns.append((f"{key}_ci", f"{header} 95% CI", _ci(fmt)))
    for row in rows:
        for key in METRICS:
            row[f"{key}_pair"] = (row[f"{key}_mean"], row[f"{key}_std"])
            row[f"{key}_ci"] = (row[f"{key}_ci_low"], row[f"{key}_ci_high"])
    return columns


def csv_keys(rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in rows[0] if not k.startswith("_") and not k.endswith(("_pair", "_ci"))] if rows else []


def write_tables(exp_dir: str | Path, rows: list[dict[str, Any]], baseline: Optional[str] = None) -> str:
    """Write results.csv and results.md (table, then the verdicts); return the same as text."""
    exp_dir = Path(exp_dir)
    comparisons = compare_points(rows, baseline)
    if comparisons is not None:
        _add_difference_columns(rows, comparisons)
    columns = table_columns(rows)
    note = ("runs: completed seeds (n). Each cell: mean ± sample std over them; 95% CI: Student t interval "
            "of the mean.")
    verdicts = "" if comparisons is None else \
        "\n\n" + comparisons.heading() + "\n" + "\n".join(f"- {s}" for s in comparisons.sentences())
    atomic_write(exp_dir / "results.csv", to_csv(rows, csv_keys(rows)))
    atomic_write(exp_dir / "results.md", to_markdown(rows, columns) + f"\n\n{note}{verdicts}\n")
    return to_text(rows, columns) + verdicts
