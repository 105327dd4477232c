"""One run's result that shows itself (tv.train, tv.load of a run directory)."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Optional, Sequence

from matplotlib.figure import Figure

from .. import mistakes as _mistakes
from .. import runs
from ..errors import DataError, TinyVisionError
from ..evaluate import confident_mistakes
from ..report.build import write_report
from ..report.calibration import plot_reliability, reliability_data
from ..report.document import Table
from ..report.grids import plot_confusion, plot_prediction_grid
from ..report.html import html_table
from ..report.load import RunRecord
from ..report.plots import (plot_learning_curves)
from ..report.tables import per_class_table, run_summary_table
from ..tables import num, pct, plain
from .common import _CSS, _cut, _figure_html, _frame, _pandas


class RunResult(dict):
    """One run: its result (result.json) as a dict, with its directory's files one call away.

    Data: the dict itself, `history` (metrics.csv rows); as DataFrames `metrics` (per epoch),
    `results` (one row), `per_class`, `confusion`, `mistakes()`. Figures: `plot_curves()`,
    `plot_confusion()`, `plot_reliability()`, `plot_predictions()`, `plot_mistakes()`. `report()`
    writes report.html.
    """

    def __init__(self, result: dict[str, Any], run_dir: str | Path | None = None, model: Any = None) -> None:
        super().__init__(result)
        where = run_dir if run_dir is not None else result.get("run_dir")
        self.dir: Optional[Path] = Path(where) if where not in (None, "", "None") else None
        self.model = model  # a model given in Python (for predict), which the files cannot rebuild

    @classmethod
    def open(cls, path: str | Path, model: Any = None) -> "RunResult":
        """A run directory as written by a run (complete, interrupted or not started yet)."""
        from .. import rundir

        path = Path(path)
        if not path.is_dir():
            raise DataError(f"{path}: no such run directory")
        if not rundir.inspect_run(path).is_run:
            raise DataError(f"{path}: not a run directory (no {runs.CONFIG} or {runs.RESULT})")
        return cls(runs.read_result(path) or {}, path, model)

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
                "test_error": test.get("error"), "test_macro_f1": test.get("macro_f1"),
                "test_top_k": test.get("top_k"), "test_top_k_accuracy": test.get("top_k_accuracy"),
                "test_ece": test.get("ece"), "seconds": self.get("total_seconds"),
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
        """Test precision, recall (class accuracy), F1 and support per class (needs pandas)."""
        self._test("per_class")  # one line where the run has no test result
        table = per_class_table(dict(self))  # F1 from precision and recall for runs that did not keep it
        rows = [{k: r[k] for k in ("precision", "recall", "f1", "support")} for r in table.rows] if table else []
        return _pandas().DataFrame(rows, index=_pandas().Index(self["classes"], name="class"))

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
            from ..inference import folder_mistakes, load_model

            rows = folder_mistakes(load_model(self._written(), model=self.model), folder)
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
        from ..inference import label_from_path, load_model, predict_files

        loaded = load_model(self._written(), model=self.model)
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

    def plot_reliability(self) -> Figure:
        """The reliability diagram: accuracy against confidence over the run's calibration bins, the
        test images per bin and the expected calibration error (ECE)."""
        self._test("accuracy")
        stored = "calibration" in self["test"]  # else from predictions.safetensors (older runs)
        data = reliability_data(dict(self), None if stored else self.predictions())
        if data is None:
            raise TinyVisionError(f"{self.name}: no test predictions to draw a reliability diagram from")
        return plot_reliability(data, title=f"Reliability diagram: {self.name}")

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
            if test.get("macro_f1") is not None:
                lines.append(f"  test macro-F1 {pct(test['macro_f1'])}  top-{test.get('top_k')} accuracy "
                             f"{pct(test.get('top_k_accuracy'))}  ECE {pct(test.get('ece'))}")
        if self.get("params") is not None:
            seconds = self.get("total_seconds")
            lines.append(f"  {self['params']:,} parameters  {self.get('macs') or 0:,} MACs  seed {self.get('seed')}"
                         + (f"  {seconds:.1f} s" if seconds else ""))
        if test.get("most_confused"):
            pairs = ", ".join(f"{p['true']}->{p['predicted']} ({p['count']})" for p in test["most_confused"][:3])
            lines.append(f"  most confused: {pairs}")
        lines.append(f"  dir: {self.dir}")
        lines.append("  .metrics .results .per_class .mistakes() .plot_curves() .plot_confusion() "
                     ".plot_reliability() .plot_predictions() .report()")
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
