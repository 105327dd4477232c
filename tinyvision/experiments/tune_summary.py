"""What a tuning run leaves beside its trials: OUT/tune.yaml (what the study was made from),
OUT/tune.json (one row per trial, the best) and OUT/best (a copy of the best trial's run
directory); and the summary as text."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import runs
from ..files import atomic_write
from ..tables import Column, num, pct, plain, secs, to_text
from .tune_spec import TuneSpec
from .tune_study import counts

SUMMARY, RECORD = "tune.json", "tune.yaml"


def write_record(spec: TuneSpec, out_dir: Path, study_name: str) -> None:
    """OUT/tune.yaml; a directory that holds a different study is refused (nothing is changed)."""
    runs.claim_record_dir(out_dir, RECORD, {"study": study_name, **spec.record()},
                          what="tuning study", hint="--out or --study-name")


def trial_row(t: Any) -> dict[str, Any]:
    """One Optuna trial as a row of tune.json."""
    attrs = t.user_attrs
    return {"trial": t.number, "state": t.state.name.lower(), "value": t.value,
            "epochs": len(t.intermediate_values), "params": t.params, "status": attrs.get("status"),
            "reason": attrs.get("reason"), "val_accuracy": attrs.get("val_accuracy"),
            "test_accuracy": attrs.get("test_accuracy"), "run_dir": attrs.get("run_dir"),
            "host": attrs.get("host"), "seconds": t.duration.total_seconds() if t.duration else None}


def summarise(study: Any, out_dir: Path, storage: str) -> dict[str, Any]:
    """Write OUT/tune.json (and OUT/best, when the best trial ran on this machine); returns it."""
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state.name.lower() == s and counts(t) for t in trials) for s in ("complete", "pruned", "fail")}
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value, default=None)
    summary: dict[str, Any] = {
        "study": study.study_name, "storage": storage, "direction": "minimize",
        "objective": "best validation NLL", "best_trial": best.number if best else None,
        "best_value": best.value if best else None, "best_params": best.params if best else {},
        "best_run_dir": None, "best_trial_dir": best.user_attrs.get("run_dir") if best else None,
        "trials": sum(count.values()), "completed": count["complete"], "pruned": count["pruned"],
        "failed": count["fail"], "interrupted": sum(t.state.name == "FAIL" and not counts(t) for t in trials),
        "running": sum(t.state.name == "RUNNING" for t in trials),
        "rows": [trial_row(t) for t in trials]}
    source = Path(summary["best_trial_dir"]) if best else None
    if source and runs.is_complete(source):
        runs.copy_run(source, out_dir / "best")
        summary["best_run_dir"] = str(out_dir / "best")
    atomic_write(out_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _trial(number_state: tuple[int, str]) -> str:
    return "trial {:>3} {}".format(*number_state)


COLUMNS: list[Column] = [
    ("trial_state", "trial", _trial), ("value", "val loss", num), ("val_accuracy", "val acc", pct),
    ("test_accuracy", "test acc", pct), ("epochs", "epochs", plain), ("seconds", "seconds", secs),
    ("params", "params", format_params), ("reason", "reason", plain)]


def format_summary(summary: dict[str, Any], *, shown: set[int] = frozenset()) -> str:
    """The trials as a table (but those in `shown`: already printed live), then the counts and the best."""
    rows = [{**row, "trial_state": (row["trial"], row["state"])} for row in summary["rows"]
            if row["trial"] not in shown]
    lines = [to_text(rows, COLUMNS)] if rows else []
    lines.append(f"{summary['trials']} trials finished ({summary['completed']} completed, {summary['pruned']} "
                 f"pruned, {summary['failed']} failed; {summary['interrupted']} interrupted, "
                 f"{summary['running']} running) in study {summary['study']!r} ({summary['storage']})")
    if summary["best_trial"] is None:
        return "\n".join(lines + ["no trial completed"])
    where = summary["best_run_dir"] or f"{summary['best_trial_dir']} (ran on another machine)"
    return "\n".join(lines + [f"best: trial {summary['best_trial']}  val loss {summary['best_value']:.4f}  "
                              f"{format_params(summary['best_params'])}  -> {where}"])
