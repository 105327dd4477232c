"""An experiment's result that shows itself (tv.compare, tv.run, tv.load of an experiment)."""
from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any, Optional

from matplotlib.figure import Figure

from ..errors import DataError, TinyVisionError
from ..experiments.results import collect, compare_points, csv_keys, notes, table_columns, table_text
from ..report.build import main_axis, write_report
from ..report.document import Table
from ..report.html import html_table
from ..report.load import ExperimentRecord, is_experiment, read_experiment
from ..report.plots import (plot_comparison, plot_comparison_curves, plot_sweep_curves, plot_sweep_final)
from .run_result import RunResult
from .common import _CSS, _cut, _figure_html, _frame


def _reference(exp_dir: Path) -> Optional[str]:
    """The point results.csv marks as the reference of its verdicts (the run's --baseline)."""
    try:
        with (exp_dir / "results.csv").open(newline="") as f:
            return next((r["label"] for r in csv.DictReader(f) if r.get("verdict_test_accuracy") == "reference"), None)
    except (OSError, csv.Error, KeyError):
        return None


class ExperimentResult(tuple):
    """An experiment (compare, sweep): still the (directory, rows, table) tuple that `compare` and
    `run_experiment` return, with its runs, DataFrames, figures and a rich display.

    Data: `rows` (one dict per point), `table` (the printed table and verdicts), `verdicts`,
    `runs` (a RunResult per run); as DataFrames `results` (per point) and `metrics` (every epoch of every
    run). Figures: `plot_comparison()`, `plot_sweep()`, `plot_curves()`."""

    def __new__(cls, exp_dir: str | Path, rows: list[dict[str, Any]], table: str,
                baseline: Optional[str] = None) -> "ExperimentResult":
        self = super().__new__(cls, (Path(exp_dir), rows, table))
        self._baseline = baseline
        return self

    def __getnewargs__(self) -> tuple:
        return (*self, self._baseline)

    @classmethod
    def open(cls, path: str | Path, baseline: Optional[str] = None) -> "ExperimentResult":
        """An experiment directory (manifest.json), finished or not; verdicts against `baseline`,
        else the reference its results.csv names, else the first point. Reads only."""
        path = Path(path)
        if not is_experiment(path):
            raise DataError(f"{path}: not an experiment directory (no manifest.json)")
        rows = collect(path)
        reference = baseline or _reference(path)
        if reference is not None and reference not in {str(r["label"]) for r in rows} and baseline is None:
            reference = None
        return cls(path, rows, table_text(rows, reference), reference)

    # -- data ----------------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        return self[0]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self[1]

    @property
    def table(self) -> str:
        return self[2]

    @property
    def record(self) -> ExperimentRecord:
        """The experiment as the report reads it (report.load.ExperimentRecord)."""
        return read_experiment(self.dir)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def verdicts(self) -> list[str]:
        """Each point against the reference in a sentence (one varied field only; else empty)."""
        comparisons = compare_points(self.rows, self._baseline)
        return comparisons.sentences() if comparisons is not None else []

    @property
    def runs(self) -> list[RunResult]:
        """Every run the experiment holds, in manifest order; each knows its `point` and `seed`."""
        out = []
        for point, record in self.record.all_runs:
            run = RunResult(record.result, record.dir)
            run.point, run.values, run.seed = point.label, dict(point.values), record.seed
            out.append(run)
        return out

    @property
    def results(self) -> Any:
        """One row per point (as results.csv): its values, runs, params, and n, mean, std, 95% CI
        of each metric; the differences from the reference and their verdicts (needs pandas)."""
        keys = csv_keys(self.rows)
        return _frame([{k: r.get(k) for k in keys} for r in self.rows], keys, index="label")

    @property
    def metrics(self) -> Any:
        """Every epoch of every run: point, the varied values, seed, then metrics.csv's columns
        (needs pandas)."""
        rows = []
        for point, record in self.record.all_runs:
            for row in record.metrics:
                rows.append({"point": point.label, **point.values, "seed": record.seed, **row})
        frame = _frame(rows)
        if "epoch" in frame.columns:
            frame["epoch"] = frame["epoch"].astype(int)
        return frame

    # -- figures -------------------------------------------------------------------------------

    def plot_comparison(self, metric: str = "accuracy") -> Figure:
        """Test metric against parameter count, mean and 95% CI per point, seeds as dots."""
        return plot_comparison(self.record.points, metric=metric)

    def plot_sweep(self, axis: Optional[str] = None, metric: str = "accuracy") -> Figure:
        """Final test and best-validation metric against a varied field (default: lr if varied,
        else the numeric field with the most values), mean ± 1 std, seeds as dots."""
        record = self.record
        if not record.axes:
            raise TinyVisionError(f"experiment {record.name} varies nothing: no sweep to plot")
        return plot_sweep_final(record.points, axis or main_axis(record), others=record.axes, metric=metric)

    def plot_curves(self, metric: str = "accuracy") -> Figure:
        """Per point: training and validation per epoch, mean ± 1 std band over seeds (compare:
        loss and metric per model with the test result dashed)."""
        record = self.record
        if record.kind == "compare":
            return plot_comparison_curves(record.points, metric=metric)
        return plot_sweep_curves(record.points, metric=metric, ordered=record.kind == "sweep")

    def report(self, **options: Any) -> Path:
        """Write report.html, report.md and plots/ into the experiment directory; returns report.html."""
        return write_report(self.dir, **options)[0]

    # -- display --------------------------------------------------------------------------------

    def _header(self, record: ExperimentRecord) -> str:
        total, done = len(record.all_runs), len(record.all_runs) - len(record.skipped)
        kind = {"sweep": "Sweep", "compare": "Comparison"}.get(record.kind, record.kind.capitalize())
        varied = ", ".join(record.axes) or "-"
        return f"{kind} {record.name}: {len(record.points)} points, {done}/{total} runs completed; varied: {varied}"

    def __repr__(self) -> str:
        record = self.record
        lines = [self._header(record), *self.table.splitlines(), f"dir: {self.dir}",
                 ".results .metrics .runs .plot_comparison() .plot_sweep() .plot_curves() .report()"]
        return _cut(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if not cycle else "ExperimentResult(...)")

    def _repr_html_(self) -> str:
        record = self.record
        rows = [dict(r) for r in self.rows]
        parts = [_CSS, '<div class="tinyvision">', f"<h3>{html.escape(self._header(record))}</h3>",
                 f"<p>{html.escape(str(self.dir))}</p>",
                 '<div class="wide">' + html_table(Table(table_columns(rows), rows, " ".join(
                     notes(rows, compare_points(rows, self._baseline))))) + "</div>"]
        if record.skipped:
            listed = ", ".join(f"{p.label} seed {r.seed} ({r.status})" for p, r in record.skipped)
            parts.append(f'<p class="note">Not completed, left out of every number and plot: {html.escape(listed)}</p>')
        comparisons = compare_points(self.rows, self._baseline)
        if comparisons is not None:
            parts.append(f"<p>{html.escape(comparisons.heading())}</p><ul>"
                         + "".join(f"<li>{html.escape(s)}</li>" for s in comparisons.sentences()) + "</ul>")
        if any(p.completed for p in record.points):
            if record.kind == "compare":
                parts.append(_figure_html(self.plot_comparison, "comparison plot"))
            elif record.axes:
                parts.append(_figure_html(self.plot_sweep, "sweep plot"))
            parts.append(_figure_html(self.plot_curves, "learning curves"))
        parts.append("</div>")
        return "\n".join(parts)
