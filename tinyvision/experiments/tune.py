"""Hyper-parameter tuning: a tune file (base config + search space) run as an Optuna study.

    name: tune-digits
    base: {dataset: digits, model: digits-cnn, epochs: 15}
    search:
      lr: {low: 1.0e-4, high: 1.0e-1, log: true}   # float range (log scale)
      batch_size: [32, 64, 128]                      # categorical
      epochs: {low: 5, high: 20, int: true}          # int range (whole-number fields always are)
    trials: 20                                       # finished trials the study should hold
    direction: minimize                              # objective: best validation NLL
    sampler: {seed: 0, startup_trials: 10}           # TPE; random trials before it models results
    pruner: {startup_trials: 5, warmup_epochs: 1}    # median rule on val NLL per epoch; none = off

Each trial is a normal run directory OUT/trials/trial-0007; the best is copied to OUT/best and
OUT/tune.json summarises the study. The study lives in OUT/study.journal (Optuna's journal file,
safe for several processes) or in a database URL (postgresql://...) that several machines share.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import shutil
import socket
import sys
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Sequence, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import runs
from ..checkpoint import atomic_write
from ..config import RunConfig, _field_error, make_config, parse_override, read_yaml
from ..errors import ConfigError, TinyVisionError
from ..models import resolve_spec

JOURNAL, SUMMARY, RECORD = "study.journal", "tune.json", "tune.yaml"
MACHINE_FIELDS = {"data_dir", "device", "threads"}  # may differ between machines sharing a study
MAX_CORNERS = 4096  # search corners validated together; beyond this each axis alone


class RangeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    low: float
    high: float
    log: bool = False
    integer: Optional[bool] = Field(None, alias="int")  # None: from the run field's type
    step: Optional[float] = Field(None, gt=0)


class SamplerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0)
    startup_trials: int = Field(10, ge=0)  # random trials before TPE models the results


class PrunerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    startup_trials: int = Field(5, ge=0)  # completed trials before anything is pruned
    warmup_epochs: int = Field(1, ge=0)  # first epochs of a trial that are never pruned


class TuneFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("tune", pattern=r"^[A-Za-z0-9._-]+$")
    base: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, Any] = Field(min_length=1)
    trials: int = Field(20, ge=1, le=100_000)
    direction: Literal["minimize"] = "minimize"  # the objective is the best validation NLL
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: Optional[PrunerSpec] = Field(default_factory=PrunerSpec)

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_off(cls, v: Any) -> Any:
        return None if v in ("none", "off", False) else v


@dataclass(frozen=True)
class Dimension:
    """One searched field: a list of choices, or a range."""

    name: str
    choices: Optional[tuple] = None
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    step: Optional[float] = None

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list[Any]:
        if self.choices is not None:
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.integer else [self.low, self.high]


@dataclass(frozen=True)
class TuneSpec:
    file: TuneFile
    base: RunConfig
    space: dict[str, Dimension]

    @property
    def name(self) -> str:
        return self.file.name

    def config(self, params: dict[str, Any], threads: Optional[int] = None) -> RunConfig:
        values = {**self.base.model_dump(), **params}
        values["threads"] = values["threads"] or threads
        return make_config(values)

    def record(self) -> dict[str, Any]:
        """What must match to continue a study: not the trial count (it may grow), the file's
        name or where each machine keeps its data and computes (data_dir, device, threads)."""
        record = self.file.model_dump(mode="json", by_alias=True, exclude={"trials", "name"})
        record["base"] = {k: v for k, v in record["base"].items() if k not in MACHINE_FIELDS}
        return record


# -- the tune file -----------------------------------------------------------------------------

def _model_fields(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names (aliases) of the (nested) model an error location points into."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        kinds = (get_args(field.annotation) or [field.annotation]) if field else []
        nested = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if not nested:
            break
        model = nested[0]
    return [f.alias or name for name, f in model.model_fields.items()]


def _validate(model: type[BaseModel], data: Any, prefix: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _field_error(exc, prefix, _model_fields(model, exc.errors()[0]["loc"])) from None


def _whole_field(name: str) -> bool:
    annotation = RunConfig.model_fields[name].annotation
    return {a for a in get_args(annotation) if a is not type(None)} == {int} or annotation is int


def _dimension(name: str, raw: Any) -> Dimension:
    where = f"tune search.{name}"
    if name not in RunConfig.model_fields or name == "seed":
        raise ConfigError(f"{where}: not a run field that can be tuned (valid: "
                          f"{', '.join(f for f in RunConfig.model_fields if f != 'seed')})")
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(f"{where}: needs at least one choice")
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in raw):
            raise ConfigError(f"{where}: choices must be numbers, strings, booleans or null, got {raw!r}")
        return Dimension(name, choices=tuple(raw))
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: give a list of choices or a range {{low, high[, log, int, step]}}, got {raw!r}")
    r: RangeSpec = _validate(RangeSpec, raw, f"{where} ")
    integer = _whole_field(name) if r.integer is None else r.integer
    if r.integer is False and _whole_field(name):
        raise ConfigError(f"{where}: {name} takes whole numbers; drop `int: false`")
    if integer and any(v is not None and float(v) != int(v) for v in (r.low, r.high, r.step)):
        raise ConfigError(f"{where}: an int range needs whole low, high and step, got {raw!r}")
    if not r.low < r.high:
        raise ConfigError(f"{where}: low must be below high, got low={r.low} high={r.high}")
    if r.log and (r.low <= 0 or r.step is not None):
        raise ConfigError(f"{where}: a log range needs low > 0 and no step")
    return Dimension(name, low=r.low, high=r.high, log=r.log, integer=integer, step=r.step)


def _check_corners(spec: TuneSpec) -> None:
    """Every extreme point of the search space must make a valid run config."""
    dims = list(spec.space.values())
    grid = list(itertools.islice(itertools.product(*(d.corners() for d in dims)), MAX_CORNERS + 1))
    if len(grid) > MAX_CORNERS:  # too many combinations: each axis alone
        base = spec.base.model_dump()
        grid = [tuple(c if d is dim else base[d.name] for d in dims) for dim in dims for c in dim.corners()]
    for values in grid:
        params = dict(zip(spec.space, values))
        try:
            cfg = spec.config(params)
            resolve_spec(cfg.model, **cfg.model_overrides())
        except TinyVisionError as exc:
            label = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ConfigError(f"tune search: the point {label} is not a valid run: {exc}") from None


def build_tune(data: dict[str, Any] | TuneFile) -> TuneSpec:
    """Validate a tune file's contents and every corner of its search space."""
    tf: TuneFile = data if isinstance(data, TuneFile) else _validate(TuneFile, data, "tune ")
    try:
        base = make_config(tf.base)
    except ConfigError as exc:
        raise ConfigError(f"tune base: {exc}") from None
    spec = TuneSpec(tf, base, {name: _dimension(name, raw) for name, raw in tf.search.items()})
    _check_corners(spec)
    return spec


def load_tune(path: str | Path, overrides: Sequence[str] = ()) -> TuneSpec:
    """A tune file; `key=value` overrides fix base fields (a searched field given here is fixed)."""
    data = read_yaml(path)
    data.setdefault("name", Path(path).stem)
    if overrides:
        fixed = dict(parse_override(o) for o in overrides)
        base = data.get("base") if isinstance(data.get("base"), dict) else {}
        data["base"] = {**base, **fixed}
        if isinstance(data.get("search"), dict):
            data["search"] = {k: v for k, v in data["search"].items() if k not in fixed}
    return build_tune(data)


# -- storage -----------------------------------------------------------------------------------

def _open_storage(url: str) -> Any:
    """A journal file path -> JournalStorage; a database URL -> RDBStorage."""
    import optuna

    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    import sqlalchemy.exc

    try:  # heartbeats let a later worker fail the trials of a worker that died
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(_with_driver(url), engine_kwargs={"pool_pre_ping": True},
                                              heartbeat_interval=30, grace_period=180)
    except ImportError as exc:
        hint = " (pip install 'tinyvision[postgres]')" if url.startswith("postgres") else ""
        raise TinyVisionError(f"storage {_label(url)} needs a database driver: {exc.__cause__ or exc}{hint}") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        first = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
        raise TinyVisionError(f"cannot open the study storage {_label(url)}: {first}") from None


def _with_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads postgresql:// as psycopg 3: name psycopg2 when only it is installed."""
    scheme, _, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def _label(url: str) -> str:
    """The storage as it may be printed and saved: no password."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# -- trials ------------------------------------------------------------------------------------

class TrialFailed(TinyVisionError):
    """A trial whose run ended without a usable result (diverged, out of memory)."""


@dataclass(frozen=True)
class Worker:
    """What one worker process needs (picklable: workers are spawned)."""

    spec: TuneSpec
    out_dir: Path
    storage: str
    study: str
    n_trials: int
    total: int
    seed: int
    threads: Optional[int]
    quiet: bool


def _objective(w: Worker, trial: Any) -> float:
    import optuna
    import torch

    from ..pipeline import StopRun, train

    run_dir = (w.out_dir / "trials" / f"trial-{trial.number:04d}").resolve()
    for key, value in {"trial": trial.number, "run_dir": str(run_dir), "host": socket.gethostname(),
                       "pid": os.getpid()}.items():
        trial.set_user_attr(key, value)

    def on_epoch(row: dict) -> None:
        trial.report(row["val_loss"], int(row["epoch"]))  # step = epoch (1, 2, ...)
        if trial.should_prune():
            raise StopRun("pruned", f"pruned at epoch {int(row['epoch'])}: val loss {row['val_loss']:.4f} "
                                    "worse than the median of earlier trials")

    try:
        result = train(w.spec.config({n: d.suggest(trial) for n, d in w.spec.space.items()}, w.threads),
                       run_dir=run_dir, quiet=True, on_epoch=on_epoch)
    except (TinyVisionError, torch.cuda.OutOfMemoryError) as exc:
        result = {"status": "failed", "reason": str(exc).splitlines()[0], "run_dir": str(run_dir)}
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.write_result(run_dir, result)
    finally:
        (run_dir / runs.CHECKPOINT).unlink(missing_ok=True)  # trials are never resumed
    status = result["status"]
    reason = ("interrupted; running the study again replaces this trial" if status == "interrupted"
              else result.get("reason", ""))
    trial.set_user_attr("status", status)
    if reason:
        trial.set_user_attr("reason", reason)
    if status == "pruned":
        raise optuna.TrialPruned(reason)
    if status == "interrupted":
        raise KeyboardInterrupt  # Optuna records the trial as failed and stops the study
    if status != "completed":
        raise TrialFailed(f"{status}: {reason}")
    trial.set_user_attr("val_accuracy", result["best_val"]["accuracy"])
    trial.set_user_attr("test_accuracy", result["test"]["accuracy"])
    return result["best_val"]["loss"]


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _describe(t: Any) -> str:
    params = _params(t.params)
    state = t.state.name.lower()
    if state == "complete":
        outcome = f"val loss {t.value:.4f}"
    else:
        outcome = t.user_attrs.get("reason") or t.user_attrs.get("status") or state
    took = f" ({t.duration.total_seconds():.1f}s)" if t.duration else ""
    return f"trial {t.number:>3} {state:<8} {outcome}  {params}{took}"


def _work(w: Worker) -> None:
    """One worker: join the study and run up to n_trials of it."""
    import optuna

    pruner = (optuna.pruners.MedianPruner(n_startup_trials=w.spec.file.pruner.startup_trials,
                                          n_warmup_steps=w.spec.file.pruner.warmup_epochs + 1)
              if w.spec.file.pruner else optuna.pruners.NopPruner())  # steps start at epoch 1
    with warnings.catch_warnings():  # constant_liar is experimental in Optuna 4 (the default in 5)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # the liar keeps parallel workers from sampling next to each other's running trials
        sampler = optuna.samplers.TPESampler(seed=w.seed, n_startup_trials=w.spec.file.sampler.startup_trials,
                                             constant_liar=True)
    study = optuna.load_study(study_name=w.study, storage=_open_storage(w.storage), sampler=sampler, pruner=pruner)

    def report(study: Any, t: Any) -> None:
        if not w.quiet:
            print(_describe(t), file=sys.stderr, flush=True)

    def cap(study: Any, t: Any) -> None:  # as MaxTrialsCallback, counting what _counts counts
        if sum(map(_counts, study.get_trials(deepcopy=False))) >= w.total:
            study.stop()  # the study holds `total` finished trials, whoever ran them

    with _optuna_errors_only():
        study.optimize(lambda trial: _objective(w, trial), n_trials=w.n_trials,
                       catch=(TinyVisionError,), callbacks=[cap, report])


@contextmanager
def _optuna_errors_only() -> Iterator[None]:
    """Optuna's own log lines off (we print one line per trial); errors still show."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


# -- the study ---------------------------------------------------------------------------------

def _prepare(spec: TuneSpec, out_dir: Path, study_name: str, storage: Any) -> Any:
    """Create or re-open the study; refuse one (or a directory) made from a different tune file."""
    import optuna

    record = {"study": study_name, **spec.record()}
    path = out_dir / RECORD
    if path.exists() and yaml.safe_load(path.read_text()) != json.loads(json.dumps(record)):
        raise TinyVisionError(f"{out_dir} holds a different tuning study; choose another --out or "
                              "--study-name (nothing was changed)")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, yaml.safe_dump(record, sort_keys=False))
    study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize",
                                load_if_exists=True)
    saved = study.user_attrs.get("tinyvision_tune")
    if saved is None:
        study.set_user_attr("tinyvision_tune", spec.record())
    elif saved != json.loads(json.dumps(spec.record())):
        raise TinyVisionError(f"study {study_name!r} was made from a different tune file; "
                              "choose another --study-name")
    _fail_abandoned_trials(study)
    return study


def _fail_abandoned_trials(study: Any) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker process, on this host, is gone (killed with its
    pool): they would read "running" for good. Trials of other hosts, or of live processes, are left."""
    import optuna

    host, abandoned = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and isinstance(pid, int) and not _process_alive(pid):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            abandoned.append(t.number)
    return abandoned


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


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
    with _optuna_errors_only():
        study = _prepare(spec, out_dir, name, _open_storage(url))
    jobs = _plan(spec, study, out_dir, url, total, workers, quiet)
    try:
        if len(jobs) == 1:
            _work(jobs[0])
        elif jobs:
            _work_in_processes(jobs)
    finally:  # also after Ctrl-C: what finished is summarised
        summary = summarise(study, out_dir, _label(url))
    return summary


def _work_in_processes(jobs: list[Worker]) -> None:
    """Each worker in its own process; a worker that dies (killed, out of memory) ends the round with
    a one-line error: the study keeps every finished trial and a rerun replaces the lost ones."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    from ..pipeline import leave_sigterm_fatal

    try:
        with ProcessPoolExecutor(len(jobs), mp_context=get_context("spawn"), initializer=leave_sigterm_fatal) as pool:
            for future in [pool.submit(_work, job) for job in jobs]:
                future.result()
    except BrokenProcessPool:
        raise TinyVisionError("a tuning worker process died (killed, or out of memory); the finished trials "
                              "are kept in the study: run the same command again to finish it") from None


def _plan(spec: TuneSpec, study: Any, out_dir: Path, url: str, total: int, workers: int,
          quiet: bool) -> list[Worker]:
    """The trials still missing, split between the workers (none with nothing to do)."""
    import numpy as np

    existing = study.get_trials(deepcopy=False)
    remaining = max(0, total - sum(map(_counts, existing)))
    shares = [n for n in (remaining // workers + (i < remaining % workers) for i in range(workers)) if n]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // len(shares)) if len(shares) > 1 else None
    # distinct samplers: per worker, and per resumption (else the random start repeats itself)
    seeds = [int(np.random.SeedSequence([spec.file.sampler.seed, len(existing), i]).generate_state(1)[0])
             for i in range(len(shares))]
    return [Worker(spec, out_dir, url, study.study_name, n, total, seed, threads, quiet)
            for n, seed in zip(shares, seeds)]


def _counts(t: Any) -> bool:
    """Whether a trial counts towards the total: finished, or failed for a reason of its own (not
    interrupted, nor lost with a worker that died); those are replaced when the study runs again."""
    return t.state.name in ("COMPLETE", "PRUNED") or (
        t.state.name == "FAIL" and t.user_attrs.get("status") in ("failed", "diverged"))


def _row(t: Any) -> dict[str, Any]:
    attrs = t.user_attrs
    return {"trial": t.number, "state": t.state.name.lower(), "value": t.value,
            "epochs": len(t.intermediate_values), "params": t.params, "status": attrs.get("status"),
            "reason": attrs.get("reason"), "val_accuracy": attrs.get("val_accuracy"),
            "test_accuracy": attrs.get("test_accuracy"), "run_dir": attrs.get("run_dir"),
            "host": attrs.get("host"), "seconds": t.duration.total_seconds() if t.duration else None}


def _copy_run(src: Path, dst: Path) -> None:
    """Copy a run directory file by file, each replaced atomically, result.json last."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / runs.CHECKPOINT).unlink(missing_ok=True)
    for name in (runs.CONFIG, runs.METRICS, runs.WEIGHTS, runs.RESULT):
        tmp = dst / f".{name}.{uuid.uuid4().hex}"
        shutil.copyfile(src / name, tmp)
        os.replace(tmp, dst / name)


def summarise(study: Any, out_dir: Path, storage: str) -> dict[str, Any]:
    """Write OUT/tune.json (and OUT/best, when the best trial ran on this machine); returns it."""
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state.name.lower() == s and _counts(t) for t in trials) for s in ("complete", "pruned", "fail")}
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value, default=None)
    summary: dict[str, Any] = {
        "study": study.study_name, "storage": storage, "direction": "minimize",
        "objective": "best validation NLL", "best_trial": best.number if best else None,
        "best_value": best.value if best else None, "best_params": best.params if best else {},
        "best_run_dir": None, "best_trial_dir": best.user_attrs.get("run_dir") if best else None,
        "trials": sum(count.values()), "completed": count["complete"], "pruned": count["pruned"],
        "failed": count["fail"], "interrupted": sum(t.state.name == "FAIL" and not _counts(t) for t in trials),
        "running": sum(t.state.name == "RUNNING" for t in trials),
        "rows": [_row(t) for t in trials]}
    source = Path(summary["best_trial_dir"]) if best else None
    if source and runs.is_complete(source):
        _copy_run(source, out_dir / "best")
        summary["best_run_dir"] = str(out_dir / "best")
    atomic_write(out_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


# -- command line ------------------------------------------------------------------------------

def format_summary(summary: dict[str, Any]) -> str:
    """One line per trial, then the best."""
    lines = []
    for row in summary["rows"]:
        params = _params(row["params"])
        outcome = f"val loss {row['value']:.4f}" if row["state"] == "complete" else (row["reason"] or row["state"])
        lines.append(f"trial {row['trial']:>3} {row['state']:<8} {outcome}  {params}")
    lines.append(f"{summary['trials']} trials finished ({summary['completed']} completed, {summary['pruned']} pruned, "
                 f"{summary['failed']} failed; {summary['interrupted']} interrupted, {summary['running']} running) "
                 f"in study {summary['study']!r} ({summary['storage']})")
    if summary["best_trial"] is None:
        return "\n".join(lines + ["no trial completed"])
    where = summary["best_run_dir"] or f"{summary['best_trial_dir']} (ran on another machine)"
    params = _params(summary["best_params"])
    return "\n".join(lines + [f"best: trial {summary['best_trial']}  val loss {summary['best_value']:.4f}  "
                              f"{params}  -> {where}"])


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _cmd_tune(args: argparse.Namespace) -> int:
    spec = load_tune(args.tune_file, overrides=args.overrides)
    name = args.study_name or spec.name
    summary = tune(spec, Path(args.out) / runs.slug(name), trials=args.trials, storage=args.storage,
                   study_name=name, workers=args.jobs, quiet=args.quiet)
    print(format_summary(summary))
    return 0 if summary["best_trial"] is not None else 1


def add_tune_command(subparsers: Any) -> None:
    """Register `tinyvision tune TUNE.yaml [key=value ...]` on the CLI's subparsers."""
    p = subparsers.add_parser("tune", help="tune hyper-parameters: TPE search with median pruning (Optuna)")
    p.add_argument("tune_file", metavar="TUNE.yaml", help="tune file: base config, search space, trials")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="base config overrides, e.g. epochs=5; a searched field given here is fixed")
    p.add_argument("--trials", type=_positive_int, help="finished trials the study should hold (default: the file's)")
    p.add_argument("--storage", metavar="URL",
                   help="journal file, or database URL shared by several machines, e.g. "
                        "postgresql://user@host/db (default: OUT/STUDY/study.journal)")
    p.add_argument("--study-name", help="study to create or join (default: the file's name); also its folder")
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="worker processes sharing the study, each with cores/jobs threads (default: 1)")
    p.add_argument("--out", default="runs", help="parent folder of the tuning directory (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no per-trial output while running")
    p.set_defaults(func=_cmd_tune)
