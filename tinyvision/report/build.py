"""write_report: a run or an experiment directory -> report.html (self-contained) and report.md
(with its plots as PNG files in plots/). Reports only read what the directories hold.

A file the report needs that cannot be read (metrics.csv, predictions.safetensors, config.yaml)
leaves its section out with a note; write_report then raises IncompleteReport after writing,
unless partial=True (the problems are then logged as warnings on `tinyvision.report.build`).
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

from .. import runs
from ..files import atomic_write
from ..errors import DataError, TinyVisionError
from ..models.summary import summary_from_record
from ..evaluate import confident_mistakes
from ..mistakes import MISTAKES as MISTAKES_FILE
from ..mistakes import mistake_names
from ..experiments.results import collect, compare_points
from . import tables
from .dataset import DATA_GRID
from .document import Code, Document, Heading, Plot, Text, render_markdown
from .grids import plot_confusion, plot_prediction_grid
from .html import render_html
from .load import (MANIFEST, ExperimentRecord, PointRecord, RunRecord, is_experiment, point_stat, predict_test,
                   read_experiment)
from .plots import (is_numeric, metric_label, plot_comparison, plot_comparison_curves, plot_learning_curves,
                    plot_step_curves, plot_sweep_curves, plot_sweep_final, points_validation_name, validation_name)

HTML, MARKDOWN, PLOTS = "report.html", "report.md", "plots"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
log = logging.getLogger(__name__)
_UNREADABLE = (OSError, ValueError, UnicodeDecodeError, csv.Error)  # a damaged text file


class IncompleteReport(DataError):
    """The report was written, but without what some unreadable file holds (exit code 1)."""


def write_report(path: str | Path, *, metric: str = "accuracy", grid: int = 32,
                 mistakes: int = 16, partial: bool = False) -> tuple[Path, Path]:
    """Write report.html and report.md (+ plots/*.png) into a run or experiment directory.

    metric: "accuracy" or "error" for the curves; grid / mistakes: how many test images to show.
    Returns (html path, markdown path). When a file it needs cannot be read (metrics.csv,
    predictions.safetensors, config.yaml), the report is written without that section and
    IncompleteReport is raised naming the file, unless partial=True: then each problem is a
    warning on this module's logger. An unreadable result.json or manifest.json is a DataError.
    """
    path = Path(path)
    metric_label(metric)  # validates the name before any work
    problems: list[str] = []
    if is_experiment(path):
        try:
            doc = experiment_document(read_experiment(path), metric=metric)
        except _UNREADABLE as exc:
            raise DataError(f"{path}: a run's files cannot be read ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:150]})") from None
    elif (path / runs.CONFIG).exists() or (path / runs.RESULT).exists():
        doc = run_document(_read_run(path, problems), metric=metric, grid=grid, mistakes=mistakes,
                           problems=problems)
    else:
        raise DataError(f"{path}: neither a run directory (no {runs.CONFIG}) nor an experiment (no {MANIFEST})")
    (path / PLOTS).mkdir(exist_ok=True)
    for plot in doc.plots:
        atomic_write(path / PLOTS / f"{plot.name}.png", plot.png)
    atomic_write(path / MARKDOWN, render_markdown(doc, PLOTS))
    atomic_write(path / HTML, render_html(doc))
    if problems and not partial:
        raise IncompleteReport(f"{path / HTML} written without its {'; '.join(problems)}; "
                               "--partial (partial=True) accepts a partial report")
    for problem in problems:
        log.warning(f"{path / HTML} is partial: without its {problem}")
    return path / HTML, path / MARKDOWN


def _read_run(path: Path, problems: list[str]) -> RunRecord:
    """read_run, but a damaged metrics.csv is a problem (no curves), not the end of the report;
    a damaged result.json is a DataError."""
    try:
        result = runs.read_result(path) or {}
    except _UNREADABLE as exc:
        raise DataError(f"{path / runs.RESULT}: cannot be read ({type(exc).__name__})") from None
    try:
        metrics = runs.read_metrics(path)
    except _UNREADABLE as exc:
        problems.append(f"learning curves ({path / runs.METRICS} cannot be read: {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:120]})")
        metrics = []
    try:
        steps = runs.read_steps(path)
    except _UNREADABLE as exc:
        problems.append(f"step curves ({path / runs.STEPS} cannot be read: {type(exc).__name__})")
        steps = []
    return RunRecord(path, metrics, result, result.get("seed"), steps)


# -- one run -----------------------------------------------------------------------------------

def run_document(run: RunRecord, *, metric: str = "accuracy", grid: int = 32, mistakes: int = 16,
                 problems: list[str] | None = None) -> Document:
    """The run's report; each file it cannot read is appended to `problems` (and noted in it)."""
    problems = [] if problems is None else problems
    result = run.result
    name = " / ".join(str(result[k]) for k in ("dataset", "model") if result.get(k)) or run.dir.name
    doc = Document(f"Run report: {name}")
    grids = f" and the test predictions it wrote ({runs.PREDICTIONS})" if run.completed else ""
    doc.add(Text(f"Run directory: {run.dir.name} (status: {run.status}). Numbers are read from its "
                 f"{runs.METRICS} and {runs.RESULT}{grids}."))
    if not run.completed:
        doc.add(Text(f"This run is not complete (status: {run.status}): there is no test evaluation; "
                     "curves show the epochs recorded so far.", note=True))
    doc.add(Heading("Summary"), tables.run_summary_table(result, run.metrics))
    _data_section(doc, run, problems)
    _curves_section(doc, run, metric)
    if result.get("test"):
        _test_section(doc, result)
        _predictions_section(doc, run, grid, mistakes, problems)
    _model_section(doc, run, problems)
    _config_section(doc, run, problems)
    versions = tables.versions_table(result)
    if versions:
        doc.add(Heading("Environment"), versions)
    return doc


def _data_section(doc: Document, run: RunRecord, problems: list[str]) -> None:
    """The run's data-grid.png (report.dataset.write_data_grid), when the run wrote one."""
    path = run.dir / DATA_GRID
    if not path.exists():
        return
    doc.add(Heading("Data"))
    try:
        png = path.read_bytes()
        why = "" if png.startswith(PNG_MAGIC) else "is not a PNG file"
    except OSError as exc:
        png, why = b"", f"cannot be read ({type(exc).__name__})"
    if why:
        problems.append(f"data grid ({path} {why})")
        doc.add(Text(f"{DATA_GRID} {why}.", note=True))
        return
    doc.add(Plot("data_grid", png, "Training images, a few of each class, and the training split's pixel "
                                   f"values per channel ({DATA_GRID}, written by the run)."))


def _config_section(doc: Document, run: RunRecord, problems: list[str]) -> None:
    config = run.dir / runs.CONFIG
    if not config.exists():
        return
    try:
        text = config.read_text()
    except _UNREADABLE as exc:
        problems.append(f"configuration ({config} cannot be read: {type(exc).__name__})")
        doc.add(Heading("Configuration"), Text(f"{runs.CONFIG} cannot be read ({type(exc).__name__}).", note=True))
        return
    doc.add(Heading("Configuration"), Text(f"The resolved {runs.CONFIG}; re-run it with: "
                                           f"tinyvision train --config {runs.CONFIG}"), Code(text))


def _curves_section(doc: Document, run: RunRecord, metric: str) -> None:
    doc.add(Heading("Learning curves"))
    if not run.metrics:
        doc.add(Text(f"No epochs recorded yet ({runs.METRICS} is missing).", note=True))
        return
    watched = validation_name(run.result)
    weights = run.result.get("evaluated_weights", "best epoch")
    caption = (f"Training and {watched} per epoch; the dashed line is the test result (weights of the {weights}), "
               f"the dotted line marks the epoch of lowest {watched} loss.")
    if run.metrics[0].get("epoch") == 0:
        caption += " Epoch 0: the initial weights, before the first step."
    smoothing = _config_value(run, "label_smoothing")
    if smoothing:
        caption += f" Training loss includes label smoothing {smoothing}."
    doc.plot("learning_curves", plot_learning_curves(run.metrics, run.result, metric=metric), caption)
    for warning in run.result.get("warnings", []):
        doc.add(Text(f"Warning: {warning}.", note=True))
    if run.steps:
        every = int(run.steps[0]["step"])
        doc.plot("step_curves", plot_step_curves([("training", [run.steps])], metric=metric),
                 f"Training loss and {metric} every {every} steps ({runs.STEPS}): the mean over the batches "
                 "since the previous point.")


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


def _predictions_section(doc: Document, run: RunRecord, grid: int, mistakes: int,
                         problems: list[str]) -> None:
    doc.add(Heading("Predictions"))
    try:
        pred = predict_test(run.dir)
    except TinyVisionError as exc:
        doc.add(Text(f"Prediction grids skipped: {exc}", note=True))
        problems.append(f"prediction grids ({exc})")
        return
    n = min(grid, len(pred.labels), runs.GALLERY)
    if n:
        wrong = int((pred.predicted[:n] != pred.labels[:n]).sum())
        doc.plot("predictions", plot_prediction_grid(pred.gallery(list(range(n))), pred.labels[:n], pred.predicted[:n],
                                                     pred.classes, title=f"First {n} test images"),
                 f"The first {n} test images with predicted and true class; {wrong} mistakes, in red.")
    idx = confident_mistakes(pred.probs, pred.labels, min(mistakes, runs.GALLERY))
    if idx:
        conf = pred.probs.max(dim=1).values
        names = mistake_names(run.dir, idx)  # a folder dataset's file names (mistakes.csv), else None
        doc.plot("mistakes", plot_prediction_grid(pred.gallery(idx), pred.labels[idx], pred.predicted[idx],
                                                  pred.classes, confidence=conf[idx], names=names,
                                                  title="Most confident mistakes"),
                 f"The {len(idx)} wrongly classified test images the model was most sure of "
                 "(percentage: probability of the predicted class)"
                 + (f"; under each, its file name (all of them in {MISTAKES_FILE})." if names else "."))
    else:
        doc.add(Text("No test image is misclassified."))


def _model_section(doc: Document, run: RunRecord, problems: list[str]) -> None:
    if not run.result.get("layers"):
        return  # a run that has not ended, or one written before tinyvision 0.2
    try:
        summary = summary_from_record(run.result["layers"])
    except (KeyError, TypeError, ValueError) as exc:
        doc.add(Heading("Model"), Text(f"Model table skipped: {runs.RESULT} has no valid layer table ({exc})",
                                       note=True))
        problems.append(f"model table ({run.dir / runs.RESULT} has a damaged layer table: {type(exc).__name__})")
        return
    shape = list(summary.input_shape)
    doc.add(Heading("Model"), Text(f"Spec: {run.result.get('spec')}; input {shape} (C, H, W); "
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
    for warning in dict.fromkeys(w for _, r in exp.all_runs for w in r.result.get("warnings", [])):
        doc.add(Text(f"Warning: {warning}.", note=True))  # each once, however many runs say it
    _differences(doc, exp)
    ready = [p for p in exp.points if p.completed]
    if not ready:
        doc.add(Text("No completed runs yet: nothing to plot.", note=True))
    else:
        _experiment_plots(doc, exp, metric)
        _best_point(doc, exp, metric)
    doc.add(Heading("All runs"), tables.runs_table(exp, metric))
    return doc


def _differences(doc: Document, exp: ExperimentRecord) -> None:
    """Each point against the reference (the one results.csv marks, else the first): the verdicts."""
    rows = collect(exp.dir)
    reference = next((str(r["label"]) for r in _results_csv(exp.dir) if r.get("verdict_test_accuracy") == "reference"),
                     None)
    comparisons = compare_points(rows, reference if reference in {str(r["label"]) for r in rows} else None)
    if comparisons is not None:
        doc.add(Heading("Differences"), Text(comparisons.heading()), *[Text(s) for s in comparisons.sentences()])


def _results_csv(exp_dir: Path) -> list[dict[str, str]]:
    try:
        with (exp_dir / "results.csv").open(newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


def _experiment_plots(doc: Document, exp: ExperimentRecord, metric: str) -> None:
    ordered = exp.kind == "sweep"
    if exp.kind == "compare":
        doc.plot("comparison", plot_comparison(exp.points, metric=metric),
                 f"Test {metric} against parameter count (log scale); bars: 95% confidence interval of the "
                 "mean over seeds (Student t), dots: single seeds.")
        doc.plot("comparison_curves", plot_comparison_curves(exp.points, metric=metric),
                 f"Per model: {points_validation_name(exp.points)} (solid) and training (dotted) per epoch, "
                 "mean ± 1 std band over seeds; "
                 "dashed: the mean test result.")
    elif exp.axes:
        axis = main_axis(exp)
        doc.plot("sweep_final", plot_sweep_final(exp.points, axis, others=exp.axes, metric=metric),
                 f"Final test and best-validation {metric} against {axis}; bars: ±1 std over seeds, "
                 "dots: single seeds.")
    doc.add(Heading("Training curves"))
    doc.plot("sweep_curves", plot_sweep_curves(exp.points, metric=metric, ordered=ordered),
             "One curve per point; with repeats, the mean over seeds and a ±1 std band.")
    series = [(p.label, [r.steps for r in p.completed if r.steps]) for p in exp.points]
    series = [(label, steps) for label, steps in series if steps]
    if series:
        doc.plot("step_curves", plot_step_curves(series, metric=metric),
                 f"Training loss and {metric} per step ({runs.STEPS}); with repeats, the mean over seeds and a "
                 "±1 std band: the spread over initialisations and data orders.")


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def main_axis(exp: ExperimentRecord) -> str:
    """The x axis of a sweep: lr if varied, else the first numeric field with the most values."""
    if "lr" in exp.axes:
        return "lr"
    spread = {a: len({str(p.values.get(a)) for p in exp.points}) for a in exp.axes}
    numeric = [a for a in exp.axes if is_numeric([p.values.get(a) for p in exp.points])]
    return max(numeric or exp.axes, key=lambda a: spread[a])


def _chosen_on(exp: ExperimentRecord) -> str:
    if points_validation_name(exp.points) == runs.TEST_AS_VALIDATION:
        return "val_size=0: chosen on the test set, so its test score is optimistic"
    return "chosen on validation, not on test"


def _best_point(doc: Document, exp: ExperimentRecord, metric: str) -> None:
    """The point with the best mean best-validation metric (chosen on validation, not test)."""
    sign = 1 if metric == "accuracy" else -1  # higher accuracy, lower error

    def score(point: PointRecord) -> float:
        mean = point_stat(point, f"best_val.{metric}")[0]
        return -math.inf if math.isnan(mean) else sign * mean

    best = max((p for p in exp.points if p.completed), key=score)
    run = best.completed[0]
    doc.add(Heading("Best point"),
            Text(f"{best.label}: highest mean validation {metric} ({_chosen_on(exp)}). "
                 f"Confusion matrix of its seed {run.seed} run."))
    test = run.result.get("test") or {}
    if test.get("confusion") and run.result.get("classes"):
        doc.plot("best_confusion", plot_confusion(test["confusion"], run.result["classes"],
                                                  title=f"Confusion matrix: {best.label}"))
