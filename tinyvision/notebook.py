"""Results that show themselves: what `tv.train`, `tv.compare`, `tv.run` and `tv.load` return.

    run = tv.train({"dataset": "digits", "model": "digits-cnn", "epochs": 20})
    run                      # in Jupyter: summary table, learning curves, confusion matrix
    run["test"]["accuracy"]  # still the result dict (result.json)
    run.metrics              # per-epoch pandas DataFrame (pandas: pip install 'tinyvision[notebook]')
    run.plot_curves()        # a matplotlib Figure: restyle it, fig.savefig("curves.pdf")

    exp = tv.compare(["digits-mlp", "digits-cnn"], dataset="digits", epochs=20, repeats=3)
    exp                      # table with 95% CIs, the verdicts, comparison plot and curves
    exp_dir, rows, table = exp   # still the (directory, rows, printed table) tuple
    exp.results              # one row per point: n, mean, std, CI of each metric, differences

Every plot is drawn by the function the HTML report uses (report/plots.py, report/grids.py); the
result objects only read the run and experiment directories (report/load.py). train and compare
call pipeline.train and experiments.compare and wrap what they return.
"""
from __future__ import annotations

import csv
import functools
import html
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from matplotlib.figure import Figure

from . import mistakes as _mistakes
from . import pipeline, runs
from .config import DEFAULT_REPEATS, RunConfig, make_config
from .errors import DataError, TinyVisionError
from .evaluate import confident_mistakes
from .experiments.results import _add_difference_columns, collect, compare_points, csv_keys, table_columns
from .report.build import main_axis, write_report
from .report.document import Table
from .report.grids import plot_confusion, plot_prediction_grid
from .report.html import data_uri, html_table
from .report.load import ExperimentRecord, RunRecord, is_experiment, read_experiment
from .report.plots import (figure_png, plot_comparison, plot_comparison_curves, plot_learning_curves,
                           plot_sweep_curves, plot_sweep_final)
from .report.tables import run_summary_table
from .tables import num, pct, plain, to_text

__all__ = ["ExperimentResult", "RunResult", "compare", "load", "run", "train"]

EXTRA = "pip install 'tinyvision[notebook]'"
DPI = 80  # inline figures: sharp enough, a fraction of the report's bytes
MAX_LINES = 40  # a text repr fits one screen
_CSS = ("<style>.tinyvision td{white-space:nowrap}.tinyvision td.num{text-align:right;font-variant-numeric:tabular-nums}"
        ".tinyvision img{max-width:100%;height:auto}.tinyvision p.note{color:#8a5a00}"
        ".tinyvision .wide{overflow-x:auto}</style>")
_PLOT_ERRORS = (TinyVisionError, OSError, ValueError, KeyError, TypeError)


def _show_figures_inline() -> None:
    """In a Jupyter kernel, a Figure that ends a cell shows as a PNG (what `%matplotlib inline`
    sets up; the report's figures are never pyplot figures, so nothing else registers it)."""
    from .progress import in_notebook

    if not in_notebook():
        return
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats

        select_figure_formats(get_ipython(), {"png"})
    except (ImportError, ValueError, AttributeError):  # an IPython without it: figures show as text
        pass


_show_figures_inline()


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(f"DataFrames need pandas, an optional extra of tinyvision: {EXTRA}") from None
    return pandas


def _figure_html(make: Callable[[], Figure], what: str) -> str:
    """A figure as an inline <img> (base64 PNG), or a note saying why it is missing."""
    try:
        return f'<img src="{data_uri(figure_png(make(), dpi=DPI))}" alt="{html.escape(what)}">'
    except _PLOT_ERRORS as exc:
        return f'<p class="note">No {html.escape(what)}: {html.escape(str(exc))}</p>'


def _cut(lines: list[str]) -> str:
    if len(lines) > MAX_LINES:
        lines = lines[: MAX_LINES - 1] + [f"... ({len(lines) - MAX_LINES + 1} more lines)"]
    return "\n".join(lines)


def _frame(rows: Sequence[dict[str, Any]], columns: Optional[Sequence[str]] = None, index: Optional[str] = None) -> Any:
    pd = _pandas()
    frame = pd.DataFrame(list(rows), columns=list(columns) if columns is not None else None)
    return frame.set_index(index) if index and index in frame.columns else frame


# -- one run ---------------------------------------------------------------------------------------

class RunResult(dict):
    """One run: its result (result.json) as a dict, with its directory's files one call away.

    Data: the dict itself, `history` (metrics.csv rows); as DataFrames `metrics` (per epoch),
    `results` (one row), `per_class`, `confusion`, `mistakes()`. Figures: `plot_curves()`,
    `plot_confusion()`, `plot_predictions()`, `plot_mistakes()`. `report()` writes report.html.
    """

    def __init__(self, result: dict[str, Any], run_dir: str | Path | None = None) -> None:
        super().__init__(result)
        where = run_dir if run_dir is not None else result.get("run_dir")
        self.dir: Optional[Path] = Path(where) if where not in (None, "", "None") else None

    @classmethod
    def open(cls, path: str | Path) -> "RunResult":
        """A run directory as written by a run (complete, interrupted or not started yet)."""
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"{path}: no such run directory")
        if not ((path / runs.CONFIG).exists() or (path / runs.RESULT).exists()):
            raise DataError(f"{path}: not a run directory (no {runs.CONFIG} or {runs.RESULT})")
        return cls(runs.read_result(path) or {}, path)

    # -- data ----------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        return self.get("status", "not started")

    @property
    def name(self) -> str:
        return " / ".join(str(self[k]) for k in ("dataset", "model") if self.get(k)) or \
            (self.dir.name if self.dir else "run")

    @property
    def history(self) -> list[dict[str, float]]:
        """metrics.csv: one dict per epoch (train/val loss, accuracy, error, lr, seconds)."""
        return runs.read_metrics(self.dir) if self.dir is not None else []

    @property
    def record(self) -> RunRecord:
        """The run as the report reads it (report.load.RunRecord)."""
        steps = runs.read_steps(self.dir) if self.dir is not None and hasattr(runs, "read_steps") else []
        record = RunRecord(self.dir or Path("."), self.history, dict(self), self.get("seed"))
        if hasattr(record, "steps"):
            record.steps = steps
        return record

    @property
    def summary(self) -> dict[str, Any]:
        """The run's headline numbers as one flat dict (the row of `results`)."""
        best, test = self.get("best_val") or {}, self.get("test") or {}
        return {"dataset": self.get("dataset"), "model": self.get("model"), "status": self.status,
                "params": self.get("params"), "macs": self.get("macs"), "seed": self.get("seed"),
                "epochs_run": self.get("epochs_run"), "best_epoch": self.get("best_epoch"),
                "best_val_loss": best.get("loss"), "best_val_accuracy": best.get("accuracy"),
                "test_loss": test.get("loss"), "test_accuracy": test.get("accuracy"),
                "test_error": test.get("error"), "seconds": self.get("total_seconds"),
                "run_dir": str(self.dir) if self.dir else None}

    @property
    def metrics(self) -> Any:
        """metrics.csv as a DataFrame, one row per epoch (needs pandas)."""
        frame = _frame(self.history)
        if "epoch" in frame.columns:
            frame["epoch"] = frame["epoch"].astype(int)
        return frame

    @property
    def results(self) -> Any:
        """The headline numbers as a one-row DataFrame (needs pandas)."""
        return _frame([self.summary])

    @property
    def per_class(self) -> Any:
        """Test precision, recall (class accuracy) and support per class (needs pandas)."""
        per_class = self._test("per_class")
        return _pandas().DataFrame(per_class, index=_pandas().Index(self["classes"], name="class"))

    @property
    def confusion(self) -> Any:
        """The test confusion matrix: rows true class, columns predicted (needs pandas)."""
        pd, classes = _pandas(), self.get("classes", [])
        return pd.DataFrame(self._test("confusion"), index=pd.Index(classes, name="true"),
                            columns=pd.Index(classes, name="predicted"))

    def _test(self, key: str) -> Any:
        test = self.get("test") or {}
        if key not in test:
            raise TinyVisionError(f"{self.name}: no test result (status: {self.status})")
        return test[key]

    def predictions(self) -> runs.TestPredictions:
        """predictions.safetensors: test probabilities and labels as the run evaluated them."""
        return runs.read_predictions(self._written())

    def _written(self) -> Path:
        """The run's directory; a one-line DataError for a run that wrote none."""
        if self.dir is None:
            raise DataError("this run wrote no directory")
        return self.dir

    def mistakes(self, folder: str | Path | None = None, *, n: Optional[int] = None, as_frame: bool = True) -> Any:
        """The wrongly classified test images, most confident first: rank, path, index, true,
        predicted, confidence, true_probability, top3. Folder datasets name each image's file
        (mistakes.csv); other datasets give the test-set index only. folder: classify that folder
        of class sub-folders with this run's model instead (labels from the sub-folder names).
        A DataFrame (needs pandas), or a list of dicts with as_frame=False."""
        if folder is not None:
            from .inference import folder_mistakes, load_model

            rows = folder_mistakes(load_model(self._written()), folder)
        else:
            rows = _mistakes.read_mistakes(self.dir) if self.dir is not None else None
            if rows is None:
                pred = self.predictions()
                rows = _mistakes.mistake_rows(pred.probs, pred.labels, pred.classes)
        rows = rows[:n] if n is not None else rows
        if not as_frame:
            return rows
        frame = _frame(rows, _mistakes.COLUMNS, index="rank")
        return frame.drop(columns="path") if not any(r.get("path") for r in rows) else frame

    def predict(self, paths: str | Path | Sequence[str | Path], *, top: int = 3, as_frame: bool = True) -> Any:
        """Classify image files (folders are searched) with this run's model: path, class,
        probability and the runners-up; `true` too where an image sits in a folder named after a
        class. A DataFrame (needs pandas), or a list of dicts with as_frame=False."""
        from .inference import label_from_path, load_model, predict_files

        loaded = load_model(self._written())
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        rows = predict_files(loaded, paths, top=top)
        classes = loaded.meta["classes"]
        for row in rows:
            true = label_from_path(row["path"], classes)
            row["true"] = classes[true] if true is not None else None
        return _frame(rows) if as_frame else rows

    # -- figures (the report's own plotting functions) ------------------------------------------

    def plot_curves(self, metric: str = "accuracy") -> Figure:
        """Loss and accuracy (or error) per epoch, train and validation, the test result dashed."""
        return plot_learning_curves(self.history, dict(self), metric=metric, title=f"Learning curves: {self.name}")

    def plot_confusion(self) -> Figure:
        """The test confusion matrix beside per-class accuracy bars."""
        return plot_confusion(self._test("confusion"), self["classes"], title=f"Confusion matrix: {self.name}")

    def plot_predictions(self, n: int = 32) -> Figure:
        """The first n test images (at most 32: those the run kept) with predicted and true class."""
        pred = self.predictions()
        n = min(n, len(pred.labels), runs.GALLERY)
        return plot_prediction_grid(pred.gallery(list(range(n))), pred.labels[:n], pred.predicted[:n], pred.classes,
                                    title=f"First {n} test images")

    def plot_mistakes(self, n: int = 16) -> Figure:
        """The n wrongly classified test images the model was most sure of (at most 32), with the
        probability of the predicted class and, for folder datasets, each image's file name."""
        pred = self.predictions()
        idx = confident_mistakes(pred.probs, pred.labels, min(n, runs.GALLERY))
        if not idx:
            raise TinyVisionError(f"{self.name}: no test image is misclassified")
        names = _mistakes.mistake_names(self.dir, idx)
        return plot_prediction_grid(pred.gallery(idx), pred.labels[idx], pred.predicted[idx], pred.classes,
                                    confidence=pred.probs.max(dim=1).values[idx], title="Most confident mistakes",
                                    names=names)

    def report(self, **options: Any) -> Path:
        """Write report.html, report.md and plots/ into the run directory; returns report.html."""
        if self.dir is None:
            raise DataError("this run wrote no directory")
        return write_report(self.dir, **options)[0]

    # -- display --------------------------------------------------------------------------------

    def __repr__(self) -> str:
        best, test = self.get("best_val") or {}, self.get("test") or {}
        epochs = self.get("epochs_run")
        lines = [f"Run {self.name}: {self.status}" + (f", {epochs} epochs (best {self.get('best_epoch')})"
                                                       if epochs else "")]
        if self.get("reason"):
            lines.append(f"  reason: {self['reason']}")
        if test:
            watched = "test-as-validation" if str(self.get("validation", "")).startswith("test") else "val"
            lines.append(f"  test accuracy {pct(test.get('accuracy'))}  loss {num(test.get('loss'))}   "
                         f"best {watched} accuracy {pct(best.get('accuracy'))}  loss {num(best.get('loss'))}")
        if self.get("params") is not None:
            seconds = self.get("total_seconds")
            lines.append(f"  {self['params']:,} parameters  {self.get('macs') or 0:,} MACs  seed {self.get('seed')}"
                         + (f"  {seconds:.1f} s" if seconds else ""))
        if test.get("most_confused"):
            pairs = ", ".join(f"{p['true']}->{p['predicted']} ({p['count']})" for p in test["most_confused"][:3])
            lines.append(f"  most confused: {pairs}")
        lines.append(f"  dir: {self.dir}")
        lines.append("  .metrics .results .per_class .mistakes() .plot_curves() .plot_confusion() "
                     ".plot_predictions() .report()")
        return _cut(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if not cycle else "RunResult(...)")

    def _repr_html_(self) -> str:
        record = self.record
        parts = [_CSS, '<div class="tinyvision">', f"<h3>Run: {html.escape(self.name)}</h3>",
                 f"<p>{html.escape(str(self.dir))} (status: {html.escape(self.status)})</p>",
                 html_table(run_summary_table(dict(self), record.metrics))]
        if self.get("reason"):
            parts.append(f'<p class="note">{html.escape(str(self["reason"]))}</p>')
        if record.metrics:
            parts.append(_figure_html(self.plot_curves, "learning curves"))
        if (self.get("test") or {}).get("confusion"):
            parts.append(_figure_html(self.plot_confusion, "confusion matrix"))
        rows = _mistakes.read_mistakes(self.dir) if self.dir is not None else None
        if rows:
            table = Table([("rank", "rank", plain), ("path", "file", lambda p: Path(p).name or "-"),
                           ("true", "true", plain), ("predicted", "predicted", plain),
                           ("confidence", "confidence", pct), ("top3", "top 3", plain)], rows[:5],
                          f"Most confident mistakes ({len(rows)} in {_mistakes.MISTAKES}; run.mistakes() lists them)")
            parts.append(html_table(table))
        parts.append("</div>")
        return "\n".join(parts)


# -- an experiment ---------------------------------------------------------------------------------

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
        comparisons = compare_points(rows, reference)
        if comparisons is not None:
            _add_difference_columns(rows, comparisons)
        verdicts = "" if comparisons is None else \
            "\n\n" + comparisons.heading() + "\n" + "\n".join(f"- {s}" for s in comparisons.sentences())
        return cls(path, rows, to_text(rows, table_columns(rows)) + verdicts, reference)

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
                 '<div class="wide">' + html_table(Table(table_columns(rows), rows,
                                                         "Mean ± sample std over completed seeds; "
                                                         "95% CI: Student t interval of the mean")) + "</div>"]
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


# -- the entry points ------------------------------------------------------------------------------

@functools.wraps(pipeline.train)
def train(config: RunConfig | dict, **options: Any) -> RunResult:
    return RunResult(pipeline.train(config, **options))


train.__doc__ = """Train one run and write its directory; returns a RunResult: the result dict (as in
result.json: run["test"]["accuracy"], run["run_dir"]) that displays itself in a notebook and has
.metrics, .plot_curves(), .plot_confusion(), .mistakes(), .report(). Options as
tinyvision.pipeline.train: run_dir, out ("runs"), data, quiet, resume, on_epoch."""


def _base_config(base: RunConfig | dict | None, fields: dict[str, Any]) -> RunConfig:
    if isinstance(base, RunConfig):
        return make_config({**base.model_dump(), **fields}) if fields else base
    return make_config({**(base or {}), **fields})


def compare(models: Sequence[str], base: RunConfig | dict | None = None, *, out: str | Path = "runs",
            repeats: int = DEFAULT_REPEATS, jobs: int = 1, exp_dir: Optional[str | Path] = None,
            quiet: bool = False, baseline: Optional[str] = None, population: Optional[int] = None,
            **fields: Any) -> ExperimentResult:
    """Train each model with the same budget over `repeats` seeds; returns an ExperimentResult (it still
    unpacks as (directory, rows, table)). base: a RunConfig or dict of config fields; further
    config fields may be given as keywords (dataset="digits", epochs=20). population: as
    `--population` (None: auto; 1: one run at a time)."""
    from .experiments.runner import compare as run_compare

    exp_dir, rows, table = run_compare(list(models), _base_config(base, fields), out=out, repeats=repeats,
                                       jobs=jobs, exp_dir=exp_dir, quiet=quiet, baseline=baseline,
                                       population=population)
    return ExperimentResult(exp_dir, rows, table, baseline)


def run(experiment: str | Path | dict, *, overrides: Sequence[str] | dict[str, Any] = (),
        repeats: Optional[int] = None, out: str | Path = "runs", exp_dir: Optional[str | Path] = None,
        jobs: int = 1, quiet: bool = False, baseline: Optional[str] = None,
        population: Optional[int] = None) -> ExperimentResult:
    """Run (or resume) an experiment, as `tinyvision run`: a YAML file, or the same as a dict (name,
    kind, base, grid, zip, repeats). overrides change its base config: ["epochs=3"] as on the
    command line, or {"epochs": 3}; repeats replaces the file's; population as `--population`.
    Writes out/NAME (or exp_dir); re-running resumes. Returns an ExperimentResult."""
    from .config import parse_override
    from .experiments import build_experiment, load_experiment, run_experiment

    changes = dict(overrides) if isinstance(overrides, dict) else {}
    given = [] if isinstance(overrides, dict) else list(overrides)
    if isinstance(experiment, dict):
        spec = {**experiment, **({"repeats": repeats} if repeats is not None else {})}
        changes = {**dict(parse_override(o) for o in given), **changes}
        loaded = build_experiment({**spec, "base": {**(spec.get("base") or {}), **changes}})
    else:
        loaded = load_experiment(experiment, overrides=given, repeats=repeats)
        if changes:
            spec = loaded.spec.model_dump()
            loaded = build_experiment({**spec, "base": {**spec["base"], **changes}})
    target = Path(exp_dir) if exp_dir else Path(out) / loaded.spec.name
    exp_dir, rows, table = run_experiment(loaded, target, jobs=jobs, quiet=quiet, baseline=baseline,
                                          population=population)
    return ExperimentResult(exp_dir, rows, table, baseline)


def load(path: str | Path, *, baseline: Optional[str] = None) -> RunResult | ExperimentResult:
    """Open a run directory (a RunResult) or an experiment / compare directory (an ExperimentResult); reads only."""
    path = Path(path)
    if is_experiment(path):
        return ExperimentResult.open(path, baseline)
    if path.is_dir() and ((path / runs.CONFIG).exists() or (path / runs.RESULT).exists()):
        return RunResult.open(path)
    raise DataError(f"{path}: neither a run directory (no {runs.CONFIG}) nor an experiment (no manifest.json)")

