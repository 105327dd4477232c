"""The report's tables as Table blocks: run summary, per-layer parameters, per-class precision and
recall, most-confused pairs, and one row per experiment point and per run."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ..models.summary import ModelSummary
from ..tables import num, pct, plain
from .document import Table, label
from .load import ExperimentRecord, RunRecord, get, point_stat


def _pm(mean: float, std: float, n: int, scale: float = 100.0, unit: str = "%", digits: int = 2) -> str:
    if n == 0:
        return "-"
    text = f"{scale * mean:.{digits}f}{unit}"
    return f"{text} ± {scale * std:.{digits}f}{unit}" if n > 1 else text


def yes_no(value: Any) -> str:
    return "-" if value is None else "yes" if value else "no"


def seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


def run_summary_table(result: dict[str, Any], metrics: Sequence[dict[str, float]]) -> Table:
    """Field/value pairs: status, model, size, epochs, best validation and test numbers, time."""
    best, test = result.get("best_val") or {}, result.get("test") or {}
    fields = [
        ("status", result.get("status", "not started"), plain), ("dataset", result.get("dataset"), plain),
        ("model", result.get("model"), plain), ("spec", result.get("spec"), plain),
        ("parameters", result.get("params"), num), ("MACs per image", result.get("macs"), num),
        ("epochs run", result.get("epochs_run", len(metrics) or None), plain),
        ("best epoch", result.get("best_epoch"), plain), ("stopped early", result.get("stopped_early"), yes_no),
        ("best val loss (nats)", best.get("loss"), num), ("best val accuracy", best.get("accuracy"), pct),
        ("test loss (nats)", test.get("loss"), num), ("test accuracy", test.get("accuracy"), pct),
        ("test error", test.get("error"), pct), ("seed", result.get("seed"), plain),
        ("device", result.get("device"), plain), ("precision", result.get("precision"), plain),
        ("mean epoch time (s, training only)", result.get("mean_epoch_seconds"), seconds),
        ("total time (s, incl. data and test)", result.get("total_seconds"), seconds),
    ]
    rows = [{"field": name, "value": fmt(value)} for name, value, fmt in fields if value is not None]
    return Table([("field", "field", plain), ("value", "value", plain)], rows)


def layer_table(summary: ModelSummary) -> Table:
    """One row per leaf layer in call order, and a total row (MACs per image)."""
    rows = [{"name": r.name, "kind": r.kind, "output": _shape(r.output_shape), "params": r.params,
             "macs": r.macs} for r in summary.rows]
    rows.append({"name": "total", "kind": "", "output": _shape(summary.input_shape) + " in",
                 "params": summary.params, "macs": summary.macs})
    columns = [("name", "layer", label), ("kind", "kind", label), ("output", "output shape", label),
               ("params", "params", num), ("macs", "MACs", num)]
    caption = "" if summary.trainable_params == summary.params else \
        f"trainable parameters: {summary.trainable_params:,}"
    return Table(columns, rows, caption)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "-"


def per_class_table(result: dict[str, Any]) -> Optional[Table]:
    """Precision, recall (= per-class accuracy) and support per class, from result.json's test."""
    per_class = (result.get("test") or {}).get("per_class")
    if not per_class:
        return None
    rows = [{"class": c, "precision": p, "recall": r, "support": int(s)} for c, p, r, s in
            zip(result.get("classes", []), per_class["precision"], per_class["recall"], per_class["support"])]
    columns = [("class", "class", label), ("precision", "precision", pct),
               ("recall", "recall (class accuracy)", pct), ("support", "test images", num)]
    return Table(columns, rows, "Per-class precision and recall on the test set")


def confused_table(result: dict[str, Any]) -> Optional[Table]:
    """The most frequent (true, predicted) mistakes, with their share of the true class."""
    test = result.get("test") or {}
    pairs = test.get("most_confused")
    if pairs is None:
        return None
    support = dict(zip(result.get("classes", []), (test.get("per_class") or {}).get("support", [])))
    rows = [{**p, "share": p["count"] / support[p["true"]] if support.get(p["true"]) else None} for p in pairs]
    columns = [("true", "true class", label), ("predicted", "predicted as", label), ("count", "count", num),
               ("share", "share of true class", pct)]
    return Table(columns, rows, "Most-confused class pairs (test set)")


def versions_table(result: dict[str, Any]) -> Optional[Table]:
    versions = result.get("versions")
    if not versions:
        return None
    rows = [{"name": k, "value": str(v)} for k, v in versions.items()]
    return Table([("name", "software", plain), ("value", "version", plain)], rows)


def points_table(exp: ExperimentRecord, metric: str = "accuracy") -> Table:
    """One row per point: completed/total runs, size, best validation and test metric (mean ± std)."""
    rows = []
    for p in exp.points:
        params, _, n_params = point_stat(p, "params")
        rows.append({"label": p.label, "runs": f"{len(p.completed)}/{len(p.runs)}",
                     "params": int(params) if n_params else None,
                     "val": _pm(*point_stat(p, f"best_val.{metric}")),
                     "test": _pm(*point_stat(p, f"test.{metric}")),
                     "loss": _pm(*point_stat(p, "test.loss"), scale=1.0, unit="", digits=4),
                     "seconds": _pm(*point_stat(p, "total_seconds"), scale=1.0, unit="", digits=1)})
    columns = [("label", "point", label), ("runs", "completed runs", label), ("params", "params", num),
               ("val", f"best val {metric}", plain), ("test", f"test {metric}", plain),
               ("loss", "test loss (nats)", plain), ("seconds", "seconds per run", plain)]
    return Table(columns, rows, "Mean ± 1 standard deviation (ddof=1) over completed seeds")


def runs_table(exp: ExperimentRecord, metric: str = "accuracy") -> Table:
    """Every run the manifest names, completed or not, with its status."""
    rows = [{"point": p.label, "seed": r.seed, "status": r.status, "epochs": len(r.metrics) or None,
             "best_epoch": r.result.get("best_epoch"), "val": get(r.result, f"best_val.{metric}"),
             "test": get(r.result, f"test.{metric}"), "dir": _relative(r, exp)} for p, r in exp.all_runs]
    columns = [("point", "point", label), ("seed", "seed", plain), ("status", "status", label),
               ("epochs", "epochs", plain), ("best_epoch", "best epoch", plain),
               ("val", f"best val {metric}", pct), ("test", f"test {metric}", pct), ("dir", "directory", label)]
    return Table(columns, rows)


def _relative(run: RunRecord, exp: ExperimentRecord) -> str:
    try:
        return str(run.dir.relative_to(exp.dir))
    except ValueError:
        return str(run.dir)
