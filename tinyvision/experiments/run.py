"""run_experiment: prepare the directory, run every job, aggregate and write the tables."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .results import collect, write_tables
from .runner import execute, prepare_dir
from .spec import Experiment


def run_experiment(experiment: Experiment, exp_dir: str | Path, *, jobs: int = 1,
                   quiet: bool = False) -> tuple[Path, list[dict[str, Any]], str]:
    """Run (or resume) an experiment; returns (directory, one row per point, text table)."""
    exp_dir = Path(exp_dir)
    run_jobs = prepare_dir(experiment, exp_dir)
    execute(run_jobs, workers=jobs, quiet=quiet)
    rows = collect(exp_dir)
    return exp_dir, rows, write_tables(exp_dir, rows)
