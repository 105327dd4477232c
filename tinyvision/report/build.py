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

from .. import runs
from ..files import atomic_write
from ..errors import DataError
from ..experiments.results import collect, compare_points
from ..stats import KINDS
from . import tables
from .document import Document, Heading, Text, render_markdown
from .grids import plot_confusion
from .html import render_html
from .load import MANIFEST, ExperimentRecord, PointRecord, RunRecord, is_experiment, point_stat, read_experiment
from .plots import (is_numeric, metric_label, plot_comparison, plot_comparison_curves, plot_step_curves,
                    plot_sweep_curves, plot_sweep_final, points_validation_name)
from .run_report import UNREADABLE, run_document  # noqa: F401 - run_document: this module's public name too

HTML, MARKDOWN, PLOTS = "report.html", "report.md", "plots"
log = logging.getLogger(__name__)
_UNREADABLE = UNREADABLE  # a damaged text file


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


# -- an experiment -----------------------------------------------------------------------------

def experiment_document(exp: ExperimentRecord, *, metric: str = "accuracy") -> Document:
    kind = {"sweep": "Sweep", "compare": "Comparison", "cv": "Cross-validation"}.get(exp.kind, exp.kind.capitalize())
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
    if exp.kind == "cv":  # folds are not alternatives to compare: their summary instead
        _folds_summary(doc, exp.dir)
    else:
        _differences(doc, exp)
    ready = [p for p in exp.points if p.completed]
    if not ready:
        doc.add(Text("No completed runs yet: nothing to plot.", note=True))
    else:
        _experiment_plots(doc, exp, metric)
        if exp.kind != "cv":
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


def _folds_summary(doc: Document, exp_dir: Path) -> None:
    """cv.json, as the command printed it: each accuracy's mean ± std and 95% CI over the folds."""
    import json

    try:
        summary = json.loads((exp_dir / "cv.json").read_text())
    except (OSError, ValueError):
        return
    lines = [f"{name.replace('_', ' ')}: {100 * v['mean']:.2f}% ± {100 * (v['std'] or 0):.2f}% over {v['n']} folds "
             f"(95% CI {100 * v['ci_low']:.2f}% to {100 * v['ci_high']:.2f}%; {v['interval']})"
             for name, v in summary.items() if isinstance(v, dict) and "accuracy" in name and v.get("mean") is not None
             and v.get("ci_low") is not None]
    doc.add(Heading("Over the folds"), *[Text(line) for line in lines],
            Text("The folds share training images: the interval shows the spread, narrower than one over "
                 "independent training sets.", note=True))


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
                 f"mean over seeds ({KINDS['proportion']}: asymmetric near 0 and 100%), dots: single seeds.")
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
