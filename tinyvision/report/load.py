"""Read run and experiment directories into plain records for plots and tables (read only).

Also the one computation a report needs beyond the saved files: test-set predictions for the
image grids, from the run's saved model and its dataset.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .. import runs
from ..data.loader import DeviceLoader
from ..errors import DataError
from ..evaluate import predict_loader
from ..inference import load_model
from ..pipeline import load_data

MANIFEST = "manifest.json"


@dataclass
class RunRecord:
    """One run directory as read from disk; result is {} while the run has not written one."""

    dir: Path
    metrics: list[dict[str, float]]
    result: dict[str, Any]
    seed: Optional[int] = None

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
    return RunRecord(run_dir, metrics, result or {}, seed if seed is not None else (result or {}).get("seed"))


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
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def point_stat(point: PointRecord, path: str) -> tuple[float, float, int]:
    """(mean, std, n) of a result number over the point's completed runs."""
    values = [v for r in point.completed if (v := get(r.result, path)) is not None]
    return (*mean_std(values), len(values))


@dataclass
class TestPredictions:
    images: torch.Tensor  # (N,C,H,W) raw pixels, CPU
    labels: torch.Tensor  # (N,)
    probs: torch.Tensor  # (N,K) softmax probabilities
    classes: tuple[str, ...]

    @property
    def predicted(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)


def predict_test(run_dir: str | Path) -> TestPredictions:
    """Re-run the saved model on its test split (on the CPU, with the run's own TTA setting)."""
    cfg = runs.read_config(run_dir)
    loaded = load_model(run_dir)
    data = load_data(cfg)
    loader = DeviceLoader(data.test, cfg.eval_batch_size, device="cpu", norm=loaded.norm)
    pred = predict_loader(loaded.model, loader, tta=cfg.tta, flip=cfg.flips, precision=cfg.precision)
    return TestPredictions(data.test.images, pred.labels, pred.probs, tuple(data.classes))
