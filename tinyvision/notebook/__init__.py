"""Results that show themselves: what `tv.train`, `tv.compare`, `tv.run` and `tv.load` return.

    run = tv.train({"dataset": "digits", "model": "digits-cnn", "epochs": 20})
    run                      # in Jupyter: summary table, learning curves, confusion matrix
    run["test"]["accuracy"]  # still the result dict (result.json)
    run.metrics              # per-epoch pandas DataFrame (pandas: pip install 'tinyvision[notebook]')
    run.plot_curves()        # a matplotlib Figure: restyle it, fig.savefig("curves.pdf")

    exp = tv.compare(["digits-mlp", "digits-cnn"], dataset="digits", epochs=20, repeats=3)
    exp                      # table with 95% CIs, the verdicts, comparison plot and curves
    exp_dir, rows, table = exp   # still the (directory, rows, printed table) tuple
    exp.results              # one row per point: n, mean, std, CI of each metric, differences

    found = tv.lr_find({"dataset": "digits", "model": "digits-cnn"})
    found                    # the loss against the lr, the suggested lr marked; found.suggested_lr

Every plot is drawn by the function the HTML report uses (report/plots.py, report/grids.py); the
result objects only read the run and experiment directories (report/load.py). train and compare
call pipeline.train and experiments.compare and wrap what they return.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from .. import pipeline, rundir, runs
from ..config import DEFAULT_REPEATS, RunConfig, make_config
from ..errors import DataError
from ..report.load import is_experiment
from .experiment_result import ExperimentResult
from .lr_find_result import LrFindResult, lr_find
from .run_result import RunResult

__all__ = ["ExperimentResult", "LrFindResult", "RunResult", "compare", "load", "lr_find", "run", "train"]


def train(config: RunConfig | dict, **options: Any) -> RunResult:
    """Train one run and write its directory; returns a RunResult: the result dict (as in
    result.json: run["test"]["accuracy"], run["run_dir"]) that displays itself in a notebook and has
    .metrics, .plot_curves(), .plot_confusion(), .mistakes(), .predict(), .report(). Options as
    tinyvision.pipeline.train_runs: run_dir, out ("runs"), data, quiet, resume, on_epoch, and
    model / loss given as Python objects (they may also be the config's "model" and "loss"): an
    nn.Module class, instance or zero-argument factory; a callable (outputs, targets) -> scalar."""
    model = options.get("model")
    if model is None and isinstance(config, dict) and not isinstance(config.get("model", ""), str):
        model = config["model"]
    return RunResult(pipeline.train(config, **options), model=model)


def _base_config(base: RunConfig | dict | None, fields: dict[str, Any]) -> RunConfig:
    if isinstance(base, RunConfig):
        return make_config({**base.model_dump(), **fields}) if fields else base
    return make_config({**(base or {}), **fields})


def compare(models: Sequence[Any], base: RunConfig | dict | None = None, *, out: str | Path = "runs",
            repeats: int = DEFAULT_REPEATS, jobs: int = 1, exp_dir: Optional[str | Path] = None,
            quiet: bool = False, baseline: Optional[str] = None, population: Optional[int] = None,
            **fields: Any) -> ExperimentResult:
    """Train each model with the same budget over `repeats` seeds; returns an ExperimentResult (it still
    unpacks as (directory, rows, table)). base: a RunConfig or dict of config fields; further
    config fields may be given as keywords (dataset="digits", epochs=20). A model may be a preset,
    a spec, file.py:Class, or an nn.Module class, instance or factory (those train in this
    process). population: as `--population` (None: auto; 1: one run at a time)."""
    from ..experiments.runner import compare as run_compare

    exp_dir, rows, table = run_compare(list(models), _base_config(base, fields), out=out, repeats=repeats,
                                       jobs=jobs, exp_dir=exp_dir, quiet=quiet, baseline=baseline,
                                       population=population)
    return ExperimentResult(exp_dir, rows, table, baseline)


def run(experiment: str | Path | dict, *, overrides: Sequence[str] | dict[str, Any] = (),
        repeats: Optional[int] = None, out: str | Path = "runs", exp_dir: Optional[str | Path] = None,
        jobs: int = 1, quiet: bool = False, baseline: Optional[str] = None,
        population: Optional[int] = None) -> ExperimentResult:
    """Run (or resume) an experiment, as `tinyvision run`: a YAML file, or the same as a dict (name,
    kind, base, grid, zip, repeats). overrides change its base config: ["epochs=3"] as on the
    command line, or {"epochs": 3}; repeats replaces the file's; population as `--population`.
    Writes out/NAME (or exp_dir); re-running resumes. Returns an ExperimentResult."""
    from ..config import parse_override
    from ..experiments import build_experiment, load_experiment, run_experiment

    changes = dict(overrides) if isinstance(overrides, dict) else {}
    given = [] if isinstance(overrides, dict) else list(overrides)
    if isinstance(experiment, dict):
        spec = {**experiment, **({"repeats": repeats} if repeats is not None else {})}
        changes = {**dict(parse_override(o) for o in given), **changes}
        loaded = build_experiment({**spec, "base": {**(spec.get("base") or {}), **changes}})
    else:
        loaded = load_experiment(experiment, overrides=given, repeats=repeats)
        if changes:
            spec = loaded.spec.model_dump()
            loaded = build_experiment({**spec, "base": {**spec["base"], **changes}})
    target = Path(exp_dir) if exp_dir else Path(out) / loaded.spec.name
    exp_dir, rows, table = run_experiment(loaded, target, jobs=jobs, quiet=quiet, baseline=baseline,
                                          population=population)
    return ExperimentResult(exp_dir, rows, table, baseline)


def load(path: str | Path, *, baseline: Optional[str] = None, model: Any = None) -> RunResult | ExperimentResult:
    """Open a run directory (a RunResult) or an experiment / compare directory (an ExperimentResult);
    reads only. model: the class, instance or factory a run's model was given as in Python (a
    notebook's class), for .predict() and .mistakes(folder)."""
    path = Path(path)
    if is_experiment(path):
        return ExperimentResult.open(path, baseline)
    if rundir.inspect_run(path).is_run:
        return RunResult.open(path, model=model)
    raise DataError(f"{path}: neither a run directory (no {runs.CONFIG}) nor an experiment (no manifest.json)")
