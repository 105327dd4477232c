"""Read run and experiment directories into plain records for plots and tables (read only:
nothing here runs a model or loads a dataset; test predictions come from predictions.safetensors).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import runs
from ..errors import DataError
from ..runs import TestPredictions
from ..stats import Summary, summarize

MANIFEST = "manifest.json"


@dataclass
class RunRecord:
    """One run directory as read from disk; result is {} while the run has not written one."""

    dir: Path
    metrics: list[dict[str, float]]
    result: dict[str, Any]
    seed: Optional[int] = None
    steps: list[dict[str, float]] = field(default_factory=list)  # steps.csv (log_every), else empty

    @property
    def status(self) -> str:
        return self.result.get("status", "not started")

    @property
    def completed(self) -> bool:
        return self.status == "completed"


@dataclass
class PointRecord:
    """One point of an experiment (one setting of the varied fields) and its repeats."""

    id: str
    label: str
    values: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def completed(self) -> list[RunRecord]:
        return [r for r in self.runs if r.completed]

    @property
    def name(self) -> str:
        """The varied value when one field varies ("digits-cnn"), else the label ("lr=0.1, wd=0")."""
        return str(next(iter(self.values.values()))) if len(self.values) == 1 else self.label


@dataclass
class ExperimentRecord:
    dir: Path
    name: str
    kind: str  # "sweep" or "compare"
    axes: list[str]
    points: list[PointRecord]

    @property
    def all_runs(self) -> list[tuple[PointRecord, RunRecord]]:
        return [(p, r) for p in self.points for r in p.runs]

    @property
    def skipped(self) -> list[tuple[PointRecord, RunRecord]]:
        return [(p, r) for p, r in self.all_runs if not r.completed]


def read_run(run_dir: str | Path, seed: Optional[int] = None) -> RunRecord:
    """A run directory (possibly incomplete or not started) -> RunRecord."""
    run_dir = Path(run_dir)
    result = runs.read_result(run_dir) if run_dir.is_dir() else None
    metrics = runs.read_metrics(run_dir) if run_dir.is_dir() else []
    steps = runs.read_steps(run_dir) if run_dir.is_dir() else []
    return RunRecord(run_dir, metrics, result or {}, seed if seed is not None else (result or {}).get("seed"), steps)


def is_experiment(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_experiment(exp_dir: str | Path) -> ExperimentRecord:
    """manifest.json and the run directories it names (relative to exp_dir)."""
    exp_dir = Path(exp_dir)
    try:
        manifest = json.loads((exp_dir / MANIFEST).read_text())
        points = [PointRecord(p["id"], p.get("label", p["id"]), dict(p.get("values", {})),
                              [read_run(exp_dir / r["dir"], r.get("seed")) for r in p.get("runs", [])])
                  for p in manifest["points"]]
        return ExperimentRecord(exp_dir, manifest.get("name", exp_dir.name), manifest.get("kind", "sweep"),
                                list(manifest.get("axes", [])), points)
    except FileNotFoundError:
        raise DataError(f"{exp_dir}: not an experiment directory (no {MANIFEST})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{exp_dir / MANIFEST}: not a valid manifest ({exc.__class__.__name__}: {exc})") from None


def get(result: dict[str, Any], path: str) -> Optional[float]:
    """A number from a nested result by dotted path ("test.accuracy"), or None."""
    value: Any = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) else None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value). NaN when empty."""
    summary = summarize(values)
    return summary.mean, (0.0 if summary.n == 1 else summary.std)


def point_values(point: PointRecord, path: str) -> list[float]:
    """A result number of each of the point's completed runs (those that have it)."""
    return [v for r in point.completed if (v := get(r.result, path)) is not None]


def point_summary(point: PointRecord, path: str, kind: str) -> Summary:
    """n, mean, std and 95% CI of a result number over the point's completed runs; kind as
    stats.summarize takes it: "proportion" (accuracy, error, macro-F1, ECE: a bounded interval,
    never outside 0 to 1) or "nonnegative" (losses, times)."""
    return summarize(point_values(point, path), kind=kind)


def point_stat(point: PointRecord, path: str) -> tuple[float, float, int]:
    """(mean, std, n) of a result number over the point's completed runs."""
    values = [v for r in point.completed if (v := get(r.result, path)) is not None]
    return (*mean_std(values), len(values))


def predict_test(run_dir: str | Path) -> TestPredictions:
    """The test-set predictions the run wrote when it ended (with its own TTA, device and layout)."""
    return runs.read_predictions(run_dir)
