"""k-fold cross-validation as an experiment of kind "cv": one point per fold (cv_fold 0 to K-1 of
cv_folds=K: the train and validation images pooled, fold i validates, the others train, the test
split untouched; data.splits.fold_of), and its summary: a row per fold, then the mean, std and
95% CI over the folds of validation and test accuracy (stats.summarize).

The folds share most of their training images, so their results are not independent: the interval
is a guide to the spread, narrower than one over independent training sets would be (there is no
unbiased estimator of k-fold CV's variance: Bengio & Grandvalet 2004).
"""
from __future__ import annotations

import json
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from .. import runs
from ..config import RunConfig
from ..errors import ConfigError
from ..files import atomic_write
from ..stats import KINDS, Summary, summarize
from ..tables import Column, mean_pm, num, pct, plain, secs, terminal_width, to_csv, to_markdown, to_text
from .results import csv_keys

KIND = "cv"
SUMMARY_FILE = "cv.json"
SUMMARIZED = {"val_accuracy": ("validation accuracy", "proportion"), "test_accuracy": ("test accuracy", "proportion"),
              "val_loss": ("validation loss", "nonnegative"), "test_loss": ("test loss", "nonnegative")}


def fold_spec(base: RunConfig, folds: int, *, repeats: int = 1, name: Optional[str] = None) -> dict[str, Any]:
    """The experiment (as build_experiment takes it) that trains `base` once per fold (and seed)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= 100:
        raise ConfigError(f"folds must be a whole number from 2 to 100 (the cross-validation folds), got {folds!r}")
    if base.val_size is not None:
        raise ConfigError(f"val_size does not apply with folds (each fold of the train and validation images "
                          f"validates in turn); leave it unset (got {base.val_size})")
    name = name or f"cv{folds}-{runs.slug(base.dataset)}-{runs.slug(base.model)}-{datetime.now():%Y%m%d-%H%M%S}"
    return {"name": name, "kind": KIND, "base": {**base.model_dump(), "cv_folds": folds, "cv_fold": 0},
            "zip": {"cv_fold": list(range(folds))}, "repeats": repeats}


def fold_summary(rows: list[dict[str, Any]]) -> dict[str, Summary]:
    """Metric -> its Summary over the folds (each fold's value: the mean over its seeds)."""
    return {metric: summarize([row.get(f"{metric}_mean") for row in rows], kind=kind)
            for metric, (_, kind) in SUMMARIZED.items()}


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The sentences under the fold table: what was split how, then each accuracy over the folds."""
    folds = len(rows)
    done = sum(1 for row in rows if row.get("completed"))
    lines = [f"{folds}-fold cross-validation: the train and validation images pooled, in stratified folds "
             f"(split_seed fixes them); each fold validates once; the test split is untouched. "
             f"{done} of {folds} folds completed."]
    for metric, summary in fold_summary(rows).items():
        words, kind = SUMMARIZED[metric]
        if kind != "proportion" or summary.n == 0:
            continue
        if summary.n == 1:
            lines.append(f"{words}: {100 * summary.mean:.2f}% (one fold: no interval)")
            continue
        lines.append(f"{words}: {100 * summary.mean:.2f}% ± {100 * summary.std:.2f}% (mean ± std over "
                     f"{summary.n} folds; 95% CI {100 * summary.ci_low:.2f}% to {100 * summary.ci_high:.2f}%)")
    lines.append(f"95% CI: {KINDS['proportion']}. The folds share training images, so they are not independent: "
                 "the interval shows the spread, and is narrower than one over independent training sets.")
    return lines


def _columns(rows: list[dict[str, Any]]) -> list[Column]:
    for row in rows:
        row.update({f"_{m}": (row.get(f"{m}_mean"), row.get(f"{m}_std")) for m in (*SUMMARIZED, "best_epoch", "seconds")})
    return [("cv_fold", "fold", plain), ("_val_accuracy", "val acc", mean_pm(pct)),
            ("_test_accuracy", "test acc", mean_pm(pct)), ("_val_loss", "val loss", mean_pm(num)),
            ("_test_loss", "test loss", mean_pm(num)), ("_best_epoch", "best epoch", mean_pm(lambda v: f"{v:.1f}")),
            ("_seconds", "seconds", mean_pm(secs)), ("completed", "runs", plain)]


def write_fold_tables(exp_dir: str | Path, rows: list[dict[str, Any]]) -> str:
    """results.csv (a row per fold, as any experiment's), results.md (the fold table and the
    summary) and cv.json (the summary's numbers); returns the text for the terminal."""
    exp_dir = Path(exp_dir)
    columns, lines = _columns(rows), summary_lines(rows)
    atomic_write(exp_dir / "results.csv", to_csv(rows, csv_keys(rows)))
    atomic_write(exp_dir / "results.md", to_markdown(rows, columns) + "\n\n" + "\n\n".join(lines) + "\n")
    numbers = {metric: {"n": s.n, "mean": _finite(s.mean), "std": _finite(s.std), "ci_low": _finite(s.ci_low),
                        "ci_high": _finite(s.ci_high), "interval": s.method}
               for metric, s in fold_summary(rows).items()}
    atomic_write(exp_dir / SUMMARY_FILE, json.dumps({"folds": len(rows), **numbers}, indent=2) + "\n")
    width = max(terminal_width(), 40)
    return to_text(rows, columns) + "\n\n" + "\n".join(textwrap.fill(line, width, break_on_hyphens=False)
                                                         for line in lines)


def _finite(x: float) -> Optional[float]:
    return None if x != x else x  # NaN (no interval from one fold) -> null in JSON
