"""write_report: a run or an experiment directory -> report.html (self-contained) and report.md
(with its plots as PNG files in plots/). Reports only read what the directories hold, except the
prediction grids, which re-run the saved model on the test split."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .. import runs
from ..checkpoint import atomic_write
from ..errors import DataError, TinyVisionError
from ..inference import load_model
from ..models.summary import summarize
from . import tables
from .document import Code, Document, Heading, Text, render_markdown
from .grids import confident_mistakes, plot_confusion, plot_prediction_grid
from .html import render_html
from .load import (MANIFEST, ExperimentRecord, PointRecord, RunRecord, is_experiment, point_stat, predict_test,
                   read_experiment, read_run)
from .plots import (is_numeric, metric_label, plot_comparison, plot_learning_curves, plot_sweep_curves,
                    plot_sweep_final)

HTML, MARKDOWN, PLOTS = "report.html", "report.md", "plots"


def write_report(path: str | Path, *, metric: str = "accuracy", grid: int = 32,
                 mistakes: int = 16) -> tuple[Path, Path]:
    """Write report.html and report.md (+ plots/*.png) into a run or experiment directory.

    metric: "accuracy" or "error" for the curves; grid / mistakes: how many test images to show.
    Returns (html path, markdown path).
    """
    path = Path(path)
    metric_label(metric)  # validates the name before any work
    if is_experiment(path):
        doc = experiment_document(read_experiment(path), metric=metric)
    elif (path / runs.CONFIG).exists() or (path / runs.RESULT).exists():
        doc = run_document(read_run(path), metric=metric, grid=grid, mistakes=mistakes)
    else:
        raise DataError(f"{path}: neither a run directory (no {runs.CONFIG}) nor an experiment (no {MANIFEST})")
    (path / PLOTS).mkdir(exist_ok=True)
    for plot in doc.plots:
        atomic_write(path / PLOTS / f"{plot.name}.png", plot.png)
    atomic_write(path / MARKDOWN, render_markdown(doc, PLOTS))
    atomic_write(path / HTML, render_html(doc))
    return path / HTML, path / MARKDOWN


# -- one run -----------------------------------------------------------------------------------

def run_document(run: RunRecord, *, metric: str = "accuracy", grid: int = 32, mistakes: int = 16) -> Document:
    result = run.result
    name = " / ".join(str(result[k]) for k in ("dataset", "model") if result.get(k)) or run.dir.name
    doc = Document(f"Run report: {name}")
    grids = "; the prediction grids re-run its saved model on the test split" if run.completed else ""
    doc.add(Text(f"Run directory: {run.dir.name} (status: {run.status}). Numbers are read from its "
                 f"{runs.METRICS} and {runs.RESULT}{grids}."))
    if not run.completed:
        doc.add(Text(f"This run is not complete (status: {run.status}): there is no test evaluation; "
                     "curves show the epochs recorded so far.", note=True))
    doc.add(Heading("Summary"), tables.run_summary_table(result, run.metrics))
    _curves_section(doc, run, metric)
    if result.get("test"):
        _test_section(doc, result)
        _predictions_section(doc, run, grid, mistakes)
    _model_section(doc, run)
    config = run.dir / runs.CONFIG
    if config.exists():
        doc.add(Heading("Configuration"), Text(f"The resolved {runs.CONFIG}; re-run it with: "
                                               f"tinyvision train --config {runs.CONFIG}"), Code(config.read_text()))
    versions = tables.versions_table(result)
    if versions:
        doc.add(Heading("Environment"), versions)
    return doc


def _curves_section(doc: Document, run: RunRecord, metric: str) -> None:
    doc.add(Heading("Learning curves"))
    if not run.metrics:
        doc.add(Text(f"No epochs recorded yet ({runs.METRICS} is missing).", note=True))
        return
    caption = ("Training and validation per epoch; the dashed line is the test result of the best-epoch "
               "weights, the dotted line marks the best epoch (lowest validation loss).")
    smoothing = _config_value(run, "label_smoothing")
    if smoothing:
        caption += f" Training loss includes label smoothing {smoothing}."
    doc.plot("learning_curves", plot_learning_curves(run.metrics, run.result, metric=metric), caption)


def _config_value(run: RunRecord, key: str) -> Any:
    try:
        return getattr(runs.read_config(run.dir), key, None)
    except TinyVisionError:
        return None


def _test_section(doc: Document, result: dict[str, Any]) -> None:
    test = result["test"]
    doc.add(Heading("Test set"))
    if test.get("confusion") and result.get("classes"):
        doc.plot("confusion", plot_confusion(test["confusion"], result["classes"]),
                 "Rows are true classes, columns predicted classes; cell numbers are image counts. "
                 "Bars: per-class accuracy (recall).")
    for table in (tables.per_class_table(result), tables.confused_table(result)):
        if table is not None:
            doc.add(table)


def _predictions_section(doc: Document, run: RunRecord, grid: int, mistakes: int) -> None:
    doc.add(Heading("Predictions"))
    try:
        pred = predict_test(run.dir)
    except TinyVisionError as exc:
        doc.add(Text(f"Prediction grids skipped: {exc}", note=True))
        return
    n = min(grid, len(pred.labels))
    if n:
        wrong = int((pred.predicted[:n] != pred.labels[:n]).sum())
        doc.plot("predictions", plot_prediction_grid(pred.images[:n], pred.labels[:n], pred.predicted[:n],
                                                     pred.classes, title=f"First {n} test images"),
                 f"The first {n} test images with predicted and true class; {wrong} mistakes, in red.")
    idx = confident_mistakes(pred.probs, pred.labels, mistakes)
    if idx:
        conf = pred.probs.max(dim=1).values
        doc.plot("mistakes", plot_prediction_grid(pred.images[idx], pred.labels[idx], pred.predicted[idx],
                                                  pred.classes, confidence=conf[idx],
                                                  title="Most confident mistakes"),
                 f"The {len(idx)} wrongly classified test images the model was most sure of "
                 "(percentage: probability of the predicted class).")
    else:
        doc.add(Text("No test image is misclassified."))


def _model_section(doc: Document, run: RunRecord) -> None:
    if not (run.dir / runs.WEIGHTS).exists():
        return
    try:
        loaded = load_model(run.dir)
    except TinyVisionError as exc:
        doc.add(Heading("Model"), Text(f"Model table skipped: {exc}", note=True))
        return
    summary = summarize(loaded.model, tuple(loaded.meta["input_shape"]))
    doc.add(Heading("Model"), Text(f"Spec: {loaded.meta['spec']}; input {loaded.meta['input_shape']} (C, H, W); "
                                   "MACs are multiply-accumulates per image."), tables.layer_table(summary))


# -- an experiment -----------------------------------------------------------------------------

def experiment_document(exp: ExperimentRecord, *, metric: str = "accuracy") -> Document:
    kind = {"sweep": "Sweep", "compare": "Comparison"}.get(exp.kind, exp.kind.capitalize())
    doc = Document(f"{kind} report: {exp.name}")
    total, done = len(exp.all_runs), len(exp.all_runs) - len(exp.skipped)
    doc.add(Text(f"Experiment directory: {exp.dir.name}. Varied: {', '.join(exp.axes) or '-'}; "
                 f"{plural(len(exp.points), 'point')}, {done} of {plural(total, 'run')} completed."))
    if exp.skipped:
        listed = ", ".join(f"{p.label} seed {r.seed} ({r.status})" for p, r in exp.skipped)
        verb = "is" if len(exp.skipped) == 1 else "are"
        doc.add(Text(f"{plural(len(exp.skipped), 'run')} {verb} not completed and left out of every number "
                     f"and plot: {listed}.", note=True))
    doc.add(Heading("Results"), tables.points_table(exp, metric))
    ready = [p for p in exp.points if p.completed]
    if not ready:
        doc.add(Text("No completed runs yet: nothing to plot.", note=True))
    else:
        _experiment_plots(doc, exp, metric)
        _best_point(doc, exp, metric)
    doc.add(Heading("All runs"), tables.runs_table(exp, metric))
    return doc


def _experiment_plots(doc: Document, exp: ExperimentRecord, metric: str) -> None:
    ordered = exp.kind == "sweep"
    if exp.kind == "compare":
        doc.plot("comparison", plot_comparison(exp.points, metric=metric),
                 f"Test {metric} against parameter count (log scale); bars: ±1 std over seeds.")
    elif exp.axes:
        axis = main_axis(exp)
        doc.plot("sweep_final", plot_sweep_final(exp.points, axis, others=exp.axes, metric=metric),
                 f"Final test and best-validation {metric} against {axis}; bars: ±1 std over seeds, "
                 "dots: single seeds.")
    doc.add(Heading("Training curves"))
    doc.plot("sweep_curves", plot_sweep_curves(exp.points, metric=metric, ordered=ordered),
             "One curve per point; with repeats, the mean over seeds and a ±1 std band.")


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def main_axis(exp: ExperimentRecord) -> str:
    """The x axis of a sweep: lr if varied, else the first numeric field with the most values."""
    if "lr" in exp.axes:
        return "lr"
    spread = {a: len({str(p.values.get(a)) for p in exp.points}) for a in exp.axes}
    numeric = [a for a in exp.axes if is_numeric([p.values.get(a) for p in exp.points])]
    return max(numeric or exp.axes, key=lambda a: spread[a])


def _best_point(doc: Document, exp: ExperimentRecord, metric: str) -> None:
    """The point with the best mean best-validation metric (chosen on validation, not test)."""
    sign = 1 if metric == "accuracy" else -1  # higher accuracy, lower error

    def score(point: PointRecord) -> float:
        mean = point_stat(point, f"best_val.{metric}")[0]
        return -math.inf if math.isnan(mean) else sign * mean

    best = max((p for p in exp.points if p.completed), key=score)
    run = best.completed[0]
    doc.add(Heading("Best point"),
            Text(f"{best.label}: highest mean validation {metric} (chosen on validation, not on test). "
                 f"Confusion matrix of its seed {run.seed} run."))
    test = run.result.get("test") or {}
    if test.get("confusion") and run.result.get("classes"):
        doc.plot("best_confusion", plot_confusion(test["confusion"], run.result["classes"],
                                                  title=f"Confusion matrix: {best.label}"))
