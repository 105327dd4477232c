"""One run's report document: summary, training images, learning curves, test metrics (confusion
matrix, per-class table, reliability diagram), prediction grids, model, configuration. It reads
the run's files only: result.json, metrics.csv, steps.csv, predictions.safetensors, config.yaml."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional

from .. import runs
from ..errors import TinyVisionError
from ..evaluate import confident_mistakes
from ..mistakes import MISTAKES as MISTAKES_FILE
from ..mistakes import mistake_names
from ..models.summary import summary_from_record
from ..runs import TestPredictions
from . import tables
from .calibration import plot_reliability, reliability_data
from .dataset import DATA_GRID, plot_labelled_grid
from .document import Code, Document, Heading, Plot, Text
from .grids import plot_confusion, plot_prediction_grid
from .load import RunRecord, predict_test
from .plots import plot_learning_curves, plot_step_curves, validation_name

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UNREADABLE = (OSError, ValueError, UnicodeDecodeError, csv.Error)  # a damaged text file


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
    pred, unread = _predictions(run)
    _data_section(doc, run, pred, problems)
    _curves_section(doc, run, metric)
    if result.get("test"):
        _test_section(doc, run, pred)
        _predictions_section(doc, run, pred, unread, grid, mistakes, problems)
    _model_section(doc, run, problems)
    _config_section(doc, run, problems)
    versions = tables.versions_table(result)
    if versions:
        doc.add(Heading("Environment"), versions)
    return doc


def _predictions(run: RunRecord) -> tuple[Optional[TestPredictions], Optional[str]]:
    """(predictions.safetensors of a tested run, None) or (None, why it cannot be read); (None,
    None) for a run with no test result (it wrote none)."""
    if not run.result.get("test"):
        return None, None
    try:
        return predict_test(run.dir), None
    except TinyVisionError as exc:
        return None, str(exc)


def _data_section(doc: Document, run: RunRecord, pred: Optional[TestPredictions], problems: list[str]) -> None:
    """The run's training images: a data-grid.png in its directory as it is, else the grid the run
    kept in predictions.safetensors, drawn here (training draws no figure)."""
    path = run.dir / DATA_GRID
    if path.exists():
        doc.add(Heading("Data"))
        _data_grid_file(doc, path, problems)
    elif pred is not None and pred.grid_images is not None and len(pred.grid_images):
        title = f"{len(pred.grid_labels)} training images, a few of each class"
        doc.add(Heading("Data"))
        doc.plot("data_grid", plot_labelled_grid(pred.grid_images, pred.grid_labels, pred.grid_classes or pred.classes,
                                                 title=title),
                 f"Training images, a few of each class, as the run's dataset stores them (kept in "
                 f"{runs.PREDICTIONS}).")


def _data_grid_file(doc: Document, path: Path, problems: list[str]) -> None:
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
    except UNREADABLE as exc:
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


def _test_section(doc: Document, run: RunRecord, pred: Optional[TestPredictions]) -> None:
    result = run.result
    test = result["test"]
    doc.add(Heading("Test set"))
    if test.get("confusion") and result.get("classes"):
        doc.plot("confusion", plot_confusion(test["confusion"], result["classes"]),
                 "Rows are true classes, columns predicted classes; cell numbers are image counts. "
                 "Bars: per-class accuracy (recall).")
    for table in (tables.per_class_table(result), tables.confused_table(result)):
        if table is not None:
            doc.add(table)
    stored = "calibration" in test  # else drawn from the stored probabilities, with the config's bins
    data = reliability_data(result, pred, 15 if stored else _config_value(run, "calibration_bins") or 15)
    if data is not None:
        doc.plot("reliability", plot_reliability(data),
                 f"Reliability diagram: test images binned by confidence (the predicted class's probability) "
                 f"into {data['bins']} equal-width bins; bars: accuracy per bin, red: its gap to the bin's mean "
                 f"confidence (bars on the diagonal: calibrated). Expected calibration error (ECE, the "
                 f"image-weighted mean gap): {100 * data['ece']:.2f}%"
                 + ("." if stored else f", from the probabilities in {runs.PREDICTIONS}."))


def _predictions_section(doc: Document, run: RunRecord, pred: Optional[TestPredictions], unread: Optional[str],
                         grid: int, mistakes: int, problems: list[str]) -> None:
    doc.add(Heading("Predictions"))
    if pred is None:
        doc.add(Text(f"Prediction grids skipped: {unread}", note=True))
        problems.append(f"prediction grids ({unread})")
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

