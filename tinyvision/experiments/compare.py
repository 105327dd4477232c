"""Compare models on one dataset with the same budget: same data, epochs, optimiser and seeds."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import runs
from ..config import RunConfig
from .run import run_experiment
from .spec import build_experiment


def compare(models: Sequence[str], base: RunConfig, *, out: str | Path = "runs", repeats: int = 1,
            jobs: int = 1, exp_dir: Optional[str | Path] = None,
            quiet: bool = False) -> tuple[Path, list[dict[str, Any]], str]:
    """Train each model with the base config; returns (experiment dir, rows, printed table)."""
    name = f"compare-{runs.slug(base.dataset)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    experiment = build_experiment({"name": name, "kind": "compare", "base": base.model_dump(),
                                   "zip": {"model": list(models)}, "repeats": repeats})
    return run_experiment(experiment, Path(exp_dir or Path(out) / name), jobs=jobs, quiet=quiet)
