"""Hyper-parameter tuning: a tune file (tune_spec) run as an Optuna study (tune_study) by one or
more workers (tune_trials), summarised beside the trials (tune_summary).

    OUT/trials/trial-0007/   each trial a normal run directory
    OUT/best/                a copy of the best trial's run directory
    OUT/tune.json            the summary: one row per trial, the best
    OUT/tune.yaml            what the study was made from (a rerun must match it)
    OUT/study.journal        the study (Optuna's journal file), unless a database URL is given
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Optional

from ..errors import TinyVisionError
from .tune_spec import TuneSpec
from .tune_study import open_storage, open_study, optuna_errors_only, storage_label
from .tune_summary import summarise, write_record
from .tune_trials import plan, run_workers

JOURNAL = "study.journal"


def tune(spec: TuneSpec, out_dir: str | Path, *, trials: Optional[int] = None, storage: Optional[str] = None,
         study_name: Optional[str] = None, workers: int = 1, quiet: bool = False) -> dict[str, Any]:
    """Run (or continue) the study until it holds `trials` finished trials; returns the summary.

    storage: a journal file (default OUT/study.journal) or a database URL (postgresql://...,
    sqlite:/// for one process). workers > 1 spawns that many processes, each with cores//workers
    threads, that share the study through the storage.
    """
    out_dir, total, name = Path(out_dir), trials or spec.file.trials, study_name or spec.name
    url = storage or str(out_dir / JOURNAL)
    if workers < 1 or total < 1:
        raise TinyVisionError(f"tune needs workers >= 1 and trials >= 1, got {workers} and {total}")
    if url.startswith("sqlite") and workers > 1:
        raise TinyVisionError("sqlite storage is for one process; use the journal file (default) or "
                              "postgresql:// with --jobs > 1")
    with optuna_errors_only():
        opened = open_storage(url)
        write_record(spec, out_dir, name)  # refuses a directory of another study, unchanged
        study = open_study(spec, name, opened)
    before = {t.number for t in study.get_trials(deepcopy=False)}
    try:
        run_workers(plan(spec, study, out_dir, url, total, workers, quiet))
    finally:  # also after Ctrl-C: what finished is summarised
        summary = summarise(study, out_dir, storage_label(url))
    host = socket.gethostname()  # the trials this call's workers ran (and printed, unless quiet)
    here = [r for r in summary["rows"] if r["trial"] not in before and r.get("host") == host]
    summary["ran_here"] = sorted(r["trial"] for r in here)
    summary["stopped"] = any(r.get("status") == "interrupted" for r in here)  # a stop request ended it
    return summary
