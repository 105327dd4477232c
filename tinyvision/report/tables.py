"""The report's tables as Table blocks: run summary, per-layer parameters, per-class precision,
recall and F1, most-confused pairs, and one row per experiment point and per run. Validation columns and
rows only where there is validation data (not for runs with val_size=0, which validated on test)."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ..experiments.results import has_validation
from ..models.summary import ModelSummary, summary_rows
from ..stats import KINDS, MIN_SEEDS_TO_CONCLUDE, summarize
from ..tables import label, mean_pm, num, pct, plain, secs, sig3, yes_no
from .document import Column, Table
from .load import ExperimentRecord, PointRecord, RunRecord, get, point_stat


def _pair(mean: float, std: float, n: int) -> tuple[Optional[float], Optional[float]]:
    """point_stat's (mean, std, n) as the (mean, std) pair that tables.mean_pm shows: no mean
    without a run, no spread from a single run."""
    return (mean if n else None, std if n > 1 else None)


def run_summary_table(result: dict[str, Any], metrics: Sequence[dict[str, float]]) -> Table:
    """Field/value pairs: status, model, size, epochs, best validation and test numbers, time."""
    best = (result.get("best_val") or {}) if has_validation(result) else {}  # val_size=0: test numbers
    test = result.get("test") or {}
    fields = [
        ("status", result.get("status", "not started"), plain), ("dataset", result.get("dataset"), plain),
        ("model", result.get("model"), plain), ("spec", result.get("spec"), plain),
        ("parameters", result.get("params"), num), ("MACs per image", result.get("macs"), num),
        ("epochs run", result.get("epochs_run", len(metrics) or None), plain),
        ("best epoch", result.get("best_epoch"), plain), ("stopped early", result.get("stopped_early"), yes_no),
        ("validated on", result.get("validation"), plain),
        ("evaluated weights", result.get("evaluated_weights"), plain),
        ("best val loss (nats)", best.get("loss"), num), ("best val accuracy", best.get("accuracy"), pct),
        ("test loss (nats)", test.get("loss"), num), ("test accuracy", test.get("accuracy"), pct),
        ("test error", test.get("error"), pct), ("test macro-F1", test.get("macro_f1"), pct),
        (f"test top-{test.get('top_k')} accuracy", test.get("top_k_accuracy"), pct),
        (f"test ECE ({(test.get('calibration') or {}).get('bins')} bins)", test.get("ece"), pct),
        ("seed", result.get("seed"), plain),
        ("device", result.get("device"), plain), ("precision", result.get("precision"), plain),
        ("mean epoch time (s, training only)", result.get("mean_epoch_seconds"), sig3),
        ("total time (s, incl. data and test)", result.get("total_seconds"), sig3),
    ]
    rows = [{"field": name, "value": fmt(value)} for name, value, fmt in fields if value is not None]
    return Table([("field", "field", plain), ("value", "value", plain)], rows)


def layer_table(summary: ModelSummary) -> Table:
    """One row per leaf layer in call order, and a total row (MACs per image)."""
    rows, total = summary_rows(summary)
    rows.append(total)
    columns = [("name", "layer", label), ("kind", "kind", label), ("output", "output shape", label),
               ("params", "params", num), ("macs", "MACs", num)]
    caption = "" if summary.trainable_params == summary.params else \
        f"trainable parameters: {summary.trainable_params:,}"
    return Table(columns, rows, caption)


def per_class_table(result: dict[str, Any]) -> Optional[Table]:
    """Precision, recall (= per-class accuracy), F1 and support per class, from result.json's test
    (F1 from precision and recall for runs written before it was kept: their harmonic mean)."""
    test = result.get("test") or {}
    per_class = test.get("per_class")
    if not per_class:
        return None
    f1 = per_class.get("f1") or [2 * p * r / (p + r) if p + r else 0.0
                                 for p, r in zip(per_class["precision"], per_class["recall"])]
    rows = [{"class": c, "precision": p, "recall": r, "f1": f, "support": int(s)} for c, p, r, f, s in
            zip(result.get("classes", []), per_class["precision"], per_class["recall"], f1, per_class["support"])]
    columns = [("class", "class", label), ("precision", "precision", pct),
               ("recall", "recall (class accuracy)", pct), ("f1", "F1", pct), ("support", "test images", num)]
    macro = f" (macro-F1 {pct(test['macro_f1'])})" if test.get("macro_f1") is not None else ""
    return Table(columns, rows, f"Per-class precision, recall and F1 on the test set{macro}")


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


def _ci(fmt) -> Any:
    def show(pair: tuple[Optional[float], Optional[float]]) -> str:
        return "-" if None in pair else f"{fmt(pair[0])} to {fmt(pair[1])}"
    return show


def _ci_pair(p: PointRecord, path: str, kind: str) -> tuple[Optional[float], Optional[float]]:
    """The 95% CI of a result number over the point's completed runs: accuracies and errors on the
    logit scale (never outside 0 to 100%), losses never below 0 (stats.summarize)."""
    s = summarize([v for r in p.completed if (v := get(r.result, path)) is not None], kind=kind)
    return (None, None) if s.n < 2 else (s.ci_low, s.ci_high)


def _val_stat(p: PointRecord, path: str) -> tuple[float, float, int]:
    """point_stat of a best_val number, over the runs that had a validation split only."""
    return point_stat(PointRecord(p.id, p.label, p.values, [r for r in p.runs if has_validation(r.result)]), path)


def points_table(exp: ExperimentRecord, metric: str = "accuracy") -> Table:
    """One row per point: n (completed/total runs), size, best validation (where there was a
    validation split) and test metric and test loss as mean ± std, and the 95% CI of the test numbers."""
    rows = []
    for p in exp.points:
        params, _, n_params = point_stat(p, "params")
        rows.append({"label": p.label, "runs": f"{len(p.completed)}/{len(p.runs)}",
                     "params": int(params) if n_params else None,
                     "val": _pair(*_val_stat(p, f"best_val.{metric}")),
                     "test": _pair(*point_stat(p, f"test.{metric}")),
                     "test_ci": _ci_pair(p, f"test.{metric}", "proportion"),
                     "loss": _pair(*point_stat(p, "test.loss")),
                     "loss_ci": _ci_pair(p, "test.loss", "nonnegative"),
                     "f1": _pair(*point_stat(p, "test.macro_f1")), "f1_ci": _ci_pair(p, "test.macro_f1", "proportion"),
                     "ece": _pair(*point_stat(p, "test.ece")), "ece_ci": _ci_pair(p, "test.ece", "proportion"),
                     "seconds": _pair(*point_stat(p, "total_seconds"))})
    columns: list[Column] = [("label", "point", label), ("runs", "n (completed runs)", label),
                             ("params", "params", num), ("val", f"best val {metric}", mean_pm(pct)),
                             ("test", f"test {metric}", mean_pm(pct)), ("test_ci", f"test {metric} 95% CI", _ci(pct)),
                             ("loss", "test loss (nats)", mean_pm(num)), ("loss_ci", "test loss 95% CI", _ci(num)),
                             ("f1", "test macro-F1", mean_pm(pct)), ("f1_ci", "test macro-F1 95% CI", _ci(pct)),
                             ("ece", "test ECE", mean_pm(pct)), ("ece_ci", "test ECE 95% CI", _ci(pct)),
                             ("seconds", "seconds per run", mean_pm(secs))]
    for key in ("val", "f1", "ece"):  # no validation split, or runs written before F1 and ECE were kept
        if all(row[key][0] is None for row in rows):
            columns = [c for c in columns if c[0] not in (key, f"{key}_ci")]
    caption = (f"Mean ± 1 standard deviation (ddof=1) over completed seeds; 95% CI (needs 2 or more seeds): "
               f"{metric}, macro-F1 and ECE: {KINDS['proportion']}; loss: {KINDS['nonnegative']}")
    if any(0 < len(p.completed) < MIN_SEEDS_TO_CONCLUDE for p in exp.points):
        caption += f". Fewer than {MIN_SEEDS_TO_CONCLUDE} seeds: the intervals are too wide to conclude"
    return Table(columns, rows, caption)


def runs_table(exp: ExperimentRecord, metric: str = "accuracy") -> Table:
    """Every run the manifest names, completed or not, with its status."""
    rows = [{"point": p.label, "seed": r.seed, "status": r.status,
             "epochs": sum(row["epoch"] >= 1 for row in r.metrics) or None,  # not eval_before's row
             "best_epoch": r.result.get("best_epoch"),
             "val": get(r.result, f"best_val.{metric}") if has_validation(r.result) else None,
             "test": get(r.result, f"test.{metric}"), "dir": _relative(r, exp)} for p, r in exp.all_runs]
    columns: list[Column] = [("point", "point", label), ("seed", "seed", plain), ("status", "status", label),
                             ("epochs", "epochs", plain), ("best_epoch", "best epoch", plain),
                             ("val", f"best val {metric}", pct), ("test", f"test {metric}", pct),
                             ("dir", "directory", label)]
    if all(row["val"] is None for row in rows):
        columns = [c for c in columns if c[0] != "val"]
    return Table(columns, rows)


def _relative(run: RunRecord, exp: ExperimentRecord) -> str:
    try:
        return str(run.dir.relative_to(exp.dir))
    except ValueError:
        return str(run.dir)
