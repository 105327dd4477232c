"""Aggregate an experiment's runs: one row per point with n, mean, std and a 95% confidence interval
of each metric over its seeds; and, where one thing varies, each point against a reference point:
the difference with its CI, Welch's p-value (Holm-corrected over the pairs) and a verdict.

Tables: results.csv (raw values) and results.md hold every column; the table printed on the
terminal holds the essential ones (`table_columns` lists them first) and leaves out columns from
the right until it fits the terminal's width (tables.fit_columns), unless `wide`.
"""
from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .. import runs
from ..files import atomic_write
from ..errors import ConfigError
from ..stats import KINDS, MIN_SEEDS_TO_CONCLUDE, Difference, compare, format_p, holm, outcome, summarize, verdict
from ..tables import (Column, fit_columns, label, mean_pm, num, pct, plain, secs, terminal_width, to_csv,
                      to_markdown, to_text)


def has_validation(result: dict[str, Any]) -> bool:
    """Whether a run had a validation split: with val_size=0 it validated on the test set, and its
    best_val numbers are test numbers (no validation column may show them)."""
    return result.get("validation") != runs.TEST_AS_VALIDATION


METRICS: dict[str, Callable[[dict], Any]] = {  # column -> how to read it from a result
    "val_loss": lambda r: (r.get("best_val") or {}).get("loss") if has_validation(r) else None,
    "val_accuracy": lambda r: (r.get("best_val") or {}).get("accuracy") if has_validation(r) else None,
    "test_loss": lambda r: (r.get("test") or {}).get("loss"),
    "test_accuracy": lambda r: (r.get("test") or {}).get("accuracy"),
    "test_macro_f1": lambda r: (r.get("test") or {}).get("macro_f1"),
    "test_ece": lambda r: (r.get("test") or {}).get("ece"),  # expected calibration error (evaluate.calibration)
    "best_epoch": lambda r: r.get("best_epoch"),
    "seconds": lambda r: r.get("total_seconds"),
}
KIND = dict.fromkeys(("val_accuracy", "test_accuracy", "test_macro_f1", "test_ece"),
                     "proportion")  # stats.summarize's kind (bounded in [0, 1]); else nonnegative
STATS = ("n", "mean", "std", "ci_low", "ci_high")  # per metric, in results.csv
VAL_METRICS = ("val_loss", "val_accuracy")
# the differences a verdict is given for: metric -> (words, higher is better, scale, unit)
VERDICT_METRICS = {"test_accuracy": ("test accuracy", True, 100.0, " points"),
                   "test_loss": ("test loss", False, 1.0, "")}
_FIXED = {"point", "label", "runs", "completed", "params", "macs"} | {f"{m}_{s}" for m in METRICS for s in STATS}
_DERIVED = ("_", "diff_", "p_", "verdict_", "outcome_")  # prefixes of keys that are not varied fields


def _number(value: float) -> Optional[float]:
    return None if value is None or math.isnan(value) else value


def point_row(point: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The point's row: its values, run counts, size, and n/mean/std/CI of every metric; the
    per-seed values stay in row["_values"] for the comparisons (never written to a file)."""
    done = [r for r in results if r.get("status") == "completed"]
    row: dict[str, Any] = {"point": point["id"], "label": point["label"], **point["values"],
                           "runs": len(results), "completed": len(done),
                           "params": done[0]["params"] if done else None,
                           "macs": done[0]["macs"] if done else None, "_values": {},
                           "_test_as_validation": any(not has_validation(r) for r in done)}
    for name, read in METRICS.items():
        values = [v for r in done if (v := read(r)) is not None]
        summary = summarize(values, kind=KIND.get(name, "nonnegative"))
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
    return [k for k in rows[0] if k not in _FIXED and not k.startswith(_DERIVED)] if rows else []


def has_validation_data(rows: list[dict[str, Any]]) -> bool:
    """Whether any point has a validation number: else the tables carry no validation columns."""
    return any(row.get(f"{m}_n") for row in rows for m in VAL_METRICS)


# -- differences from a reference point ---------------------------------------------------------

@dataclass
class Comparisons:
    """Each point against the reference, per verdict metric; p-values Holm-corrected within a metric."""

    reference: str
    differences: dict[str, list[Difference]]  # metric -> one per other point, in row order

    @property
    def corrected(self) -> bool:
        """Whether the p-values are Holm-corrected (more than one pair)."""
        return len(next(iter(self.differences.values()), [])) > 1

    def sentences(self) -> list[str]:
        out = []
        for metric, diffs in self.differences.items():
            _, _, scale, unit = VERDICT_METRICS[metric]
            out += [verdict(d, scale=scale, unit=unit, corrected=self.corrected) for d in diffs]
        return out

    def heading(self) -> str:
        pairs = len(next(iter(self.differences.values()), []))
        how = f"p-values Holm-corrected over the {pairs} pairs" if pairs > 1 else "one pair, no correction needed"
        return (f"Differences from {self.reference} (difference of means, 95% CI, Welch's t-test; {how}; "
                f"at p < 0.05; inconclusive below {MIN_SEEDS_TO_CONCLUDE} seeds each):")


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
                         name_b=point_name(reference), metric=words, higher_is_better=higher,
                         proportion=metric == "test_accuracy") for r in others]
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
        corrected = comparisons.corrected
        for row in rows:
            d = by_name.get(point_name(row))
            mark = "reference" if point_name(row) == comparisons.reference else ""
            row.update({f"diff_{metric}": _number(d.diff) if d else None,
                        f"diff_{metric}_ci_low": _number(d.ci_low) if d else None,
                        f"diff_{metric}_ci_high": _number(d.ci_high) if d else None,
                        f"p_{metric}": _number(d.p_value) if d else None,
                        f"p_holm_{metric}": _number(d.p_adjusted) if d else None,
                        f"verdict_{metric}": verdict(d, scale=scale, unit=unit, corrected=corrected) if d else mark,
                        f"outcome_{metric}": outcome(d, corrected=corrected) if d else mark})


# -- tables ------------------------------------------------------------------------------------

def _mean_ci(fmt: Callable[[Any], str]) -> Callable[[Any], str]:
    """(mean, low, high) -> "90.16% [88.84, 91.47]"; the mean alone without a CI (one seed)."""
    def show(triple: tuple[Any, Any, Any]) -> str:
        mean, low, high = triple
        if mean is None:
            return "-"
        return fmt(mean) if low is None else f"{fmt(mean)} [{fmt(low).rstrip('%')}, {fmt(high).rstrip('%')}]"
    return show


def _points(triple: tuple[Any, Any, Any]) -> str:
    """(diff, low, high) of accuracies -> "+1.7 [0.2, 3.3]", in percentage points."""
    diff, low, high = triple
    if diff is None:
        return "-"
    return f"{100 * diff:+.1f}" if low is None else f"{100 * diff:+.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _p(p: Any) -> str:
    return "-" if p is None else format_p(p).removeprefix("p = ").replace("p < ", "<")


def table_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """Every column of the experiment table, the essential first (the terminal table keeps a
    leading run of them): point, test accuracy mean [95% CI], and where one field varies the
    difference from the reference, its p and the verdict; then runs (n), params, seconds, test
    loss, macro-F1 and ECE (expected calibration error), validation (only where there is validation
    data), mean ± std, best epoch, MACs. Adds the
    display tuples ("_"-prefixed keys, never written to results.csv) to the rows."""
    axes = axes_of(rows)
    name: Column = (axes[0], axes[0], label) if len(axes) == 1 else ("label", "point", label)
    columns: list[Column] = [name, ("_acc", "test acc 95% CI", _mean_ci(pct))]
    if any("diff_test_accuracy" in row for row in rows):  # one varied field: compare_points' columns
        columns += [("_diff", "diff (points)", _points), ("_p", "p (Holm)" if len(rows) > 2 else "p", _p),
                    ("outcome_test_accuracy", "verdict", plain)]
    columns += [("completed", "runs", plain), ("params", "params", num), ("_seconds", "seconds", mean_pm(secs)),
                ("_loss", "test loss 95% CI", _mean_ci(num))]
    if any(row.get("test_macro_f1_n") for row in rows):  # not for runs written before they were kept
        columns += [("_f1", "macro-F1 95% CI", _mean_ci(pct)), ("_ece", "ECE 95% CI", _mean_ci(pct))]
    if has_validation_data(rows):
        columns += [("_val_acc", "val acc", mean_pm(pct)), ("_val_loss", "val loss", mean_pm(num))]
    columns += [("_acc_pm", "test acc (mean ± std)", mean_pm(pct)),
                ("_loss_pm", "test loss (mean ± std)", mean_pm(num)),
                ("_epoch", "best epoch", mean_pm(lambda v: f"{v:.1f}")), ("macs", "MACs", num)]
    for row in rows:
        pair = {m: (row[f"{m}_mean"], row[f"{m}_std"]) for m in METRICS}
        row.update({"_acc": _triple(row, "test_accuracy"), "_loss": _triple(row, "test_loss"),
                    "_f1": _triple(row, "test_macro_f1"), "_ece": _triple(row, "test_ece"),
                    "_diff": _triple(row, "diff_test_accuracy", ""), "_p": row.get("p_holm_test_accuracy"),
                    "_seconds": pair["seconds"], "_val_acc": pair["val_accuracy"], "_val_loss": pair["val_loss"],
                    "_acc_pm": pair["test_accuracy"], "_loss_pm": pair["test_loss"], "_epoch": pair["best_epoch"]})
    return columns


def _triple(row: dict[str, Any], key: str, mean: str = "_mean") -> tuple[Any, Any, Any]:
    return row.get(f"{key}{mean}"), row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")


def csv_keys(rows: list[dict[str, Any]]) -> list[str]:
    """results.csv's columns: every row key but the display ones, validation only where there is some."""
    val = has_validation_data(rows)
    return [k for k in rows[0] if not k.startswith("_") and (val or not k.startswith(VAL_METRICS))] if rows else []


def notes(rows: list[dict[str, Any]], comparisons: Optional[Comparisons]) -> list[str]:
    """What the table's cells mean, one paragraph each (printed and written under the table)."""
    out = [f"runs: completed seeds (n). 95% CI: mean [interval]; accuracy, macro-F1 and ECE (expected "
           f"calibration error): {KINDS['proportion']}; loss: {KINDS['nonnegative']}. ±: sample std."]
    if comparisons is not None:
        how = f", Holm-corrected over {len(rows) - 1} pairs" if comparisons.corrected else ""
        out.append(f"diff: test accuracy minus {comparisons.reference}'s, in points [Welch 95% CI]; "
                   f"p: Welch's t-test{how}; verdict at p < 0.05.")
    if any(0 < row["completed"] < MIN_SEEDS_TO_CONCLUDE for row in rows):
        out.append(f"Fewer than {MIN_SEEDS_TO_CONCLUDE} seeds (runs < {MIN_SEEDS_TO_CONCLUDE}): the interval is too "
                   f"wide to conclude, so the verdict is inconclusive whatever p; use {MIN_SEEDS_TO_CONCLUDE} or more "
                   "repeats.")
    if any(row.get("_test_as_validation") for row in rows):
        out.append("val_size=0: runs that validated on the test set have no validation numbers"
                   + ("." if has_validation_data(rows) else ", so there are no validation columns."))
    return out


def _prepare(rows: list[dict[str, Any]], baseline: Optional[str]) -> tuple[Optional[Comparisons], list[Column]]:
    comparisons = compare_points(rows, baseline)
    if comparisons is not None:
        _add_difference_columns(rows, comparisons)
    return comparisons, table_columns(rows)


def _verdicts(comparisons: Optional[Comparisons]) -> str:
    return "" if comparisons is None else \
        "\n\n" + comparisons.heading() + "\n" + "\n".join(f"- {s}" for s in comparisons.sentences())


def _text(rows: list[dict[str, Any]], comparisons: Optional[Comparisons], columns: list[Column], wide: bool,
          width: Optional[int]) -> str:
    width = terminal_width() if width is None else width
    shown = columns if wide else fit_columns(rows, columns, width, keep=2)
    lines = notes(rows, comparisons)
    if len(shown) < len(columns):
        lines.append(f"Not shown, to fit {width} characters (in results.md; --wide prints them): "
                     + ", ".join(h for _, h, _ in columns[len(shown):]) + ".")
    wrapped = "\n".join(textwrap.fill(line, max(width, 40), break_on_hyphens=False) for line in lines)
    return to_text(rows, shown) + "\n\n" + wrapped + _verdicts(comparisons)


def table_text(rows: list[dict[str, Any]], baseline: Optional[str] = None, *, wide: bool = False,
               width: Optional[int] = None) -> str:
    """The table for the terminal, its notes and the verdicts: at most `width` characters wide
    (default: the terminal's, 100 when not a terminal), columns left out from the right; `wide`:
    every column, whatever the width."""
    comparisons, columns = _prepare(rows, baseline)
    return _text(rows, comparisons, columns, wide, width)


def write_tables(exp_dir: str | Path, rows: list[dict[str, Any]], baseline: Optional[str] = None, *,
                 wide: bool = False, width: Optional[int] = None) -> str:
    """Write results.csv and results.md (every column, the notes, the verdicts); return the same
    for the terminal, fitted to its width unless `wide` (see table_text)."""
    exp_dir = Path(exp_dir)
    comparisons, columns = _prepare(rows, baseline)
    note = "\n\n".join(notes(rows, comparisons))
    atomic_write(exp_dir / "results.csv", to_csv(rows, csv_keys(rows)))
    atomic_write(exp_dir / "results.md", to_markdown(rows, columns) + f"\n\n{note}{_verdicts(comparisons)}\n")
    return _text(rows, comparisons, columns, wide, width)
