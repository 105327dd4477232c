"""Commands over many runs: compare, run (experiment files), tune, report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .common import _report, _run_config


def cmd_compare(args: argparse.Namespace) -> int:
    from ..experiments import compare

    models = [m for m in args.items if "=" not in m]
    overrides = [o for o in args.items if "=" in o]
    if not models:
        raise ConfigError("compare needs at least one model (preset name or spec)")
    done = compare(models, _run_config(args, overrides), out=args.out, repeats=args.repeats, jobs=args.jobs,
                   quiet=args.quiet, baseline=args.baseline, population=args.population)
    return _finish_experiment(args, *done, interrupted=done.interrupted)


def _finish_experiment(args: argparse.Namespace, exp_dir: Path, rows: list[dict[str, Any]], table: str,
                       interrupted: bool = False) -> int:
    """The table and where it is; the report; exit 0 when every run completed, 130 when a stop
    request ended the experiment (running the same command again continues it)."""
    from ..stopping import EXIT_INTERRUPTED

    if getattr(args, "wide", False):
        from ..experiments.results import table_text

        table = table_text(rows, args.baseline, wide=True)
    print(table)
    print(f"results in {exp_dir} (results.csv, results.md)")
    if interrupted:
        print("tinyvision: interrupted: run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    if any(r["completed"] for r in rows):
        _report(args, exp_dir)
    return 0 if all(r["completed"] == r["runs"] for r in rows) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from ..experiments import load_experiment, run_experiment
    from ..experiments.shard import Shard

    shard = Shard.parse(args.shard) if args.shard else None  # before anything runs
    overrides = [*args.overrides, *([f"data_dir={args.data_dir}"] if args.data_dir else [])]
    experiment = load_experiment(args.experiment, overrides=overrides, repeats=args.repeats)
    exp_dir = Path(args.exp_dir) if args.exp_dir else Path(args.out) / experiment.spec.name
    if shard is not None:
        return _run_shard(args, experiment, exp_dir, shard)
    done = run_experiment(experiment, exp_dir, jobs=args.jobs, quiet=args.quiet, baseline=args.baseline,
                          population=args.population)
    return _finish_experiment(args, *done, interrupted=done.interrupted)


def _run_shard(args: argparse.Namespace, experiment: Any, exp_dir: Path, shard: Any) -> int:
    """One shard's runs; the tables and report only once every run of the experiment is finished.
    Exit 0 when this shard's runs all completed."""
    from ..experiments.runner import run_shard

    done = run_shard(experiment, exp_dir, shard, jobs=args.jobs, quiet=args.quiet, baseline=args.baseline,
                     population=args.population)
    if done.table is not None:
        return _finish_experiment(args, done.exp_dir, done.rows, done.table)
    print(done.waiting_line())
    return 0 if all(r.get("status") == "completed" for r in done.results) else 1


def cmd_tune(args: argparse.Namespace) -> int:
    from .. import runs
    from ..experiments.tune import tune
    from ..experiments.tune_spec import load_tune
    from ..experiments.tune_summary import format_summary
    from ..stopping import EXIT_INTERRUPTED

    spec = load_tune(args.tune_file, overrides=args.overrides)
    name = args.study_name or spec.name
    summary = tune(spec, Path(args.out) / runs.slug(name), trials=args.trials, storage=args.storage,
                   study_name=name, workers=args.jobs, quiet=args.quiet)
    # without --quiet each trial of this call was printed as it ended: the table adds only the others
    # (earlier calls, other machines), so no trial is printed twice
    shown = set() if args.quiet else set(summary["ran_here"])
    print(format_summary(summary, shown=shown))
    if summary.get("stopped"):
        print("tinyvision: interrupted: run the same command again to continue the study", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if summary["best_trial"] is not None else 1


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report, write_tensorboard

    html, md = write_report(args.path, metric=args.metric, partial=args.partial)
    print(f"report: {html}\nsummary: {md}")
    if args.tensorboard:
        print(f"tensorboard: {write_tensorboard(args.path)}")
    return 0
