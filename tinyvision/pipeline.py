"""Training runs end to end, one or K at a time: resolve -> build -> train -> test -> write.

train_runs(configs, run_dirs) is what every command calls (train, compare, run, tune); train(config)
is train_runs of one. K runs that can share a population (training.plan) are stacked into one
trainee (training.stacked), one run trains its own module (training.single); everything else is
this one path: the model source and data, the loop, the evaluation, the checkpoint
(checkpoint.py: one format for any K) and each run's directory (runs.py, rundir.py).
"""
from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from . import distributed, probe, rundir, runs
from .checkpoint import restore_checkpoint
from .config import RunConfig, make_config
from .data import ImageDataset, load_data
from .data.cached import run_normalization
from .models.source import ModelSource, resolve_model
from .progress import EpochProgress, population_line
from .runtime import configure_threads, resolve_device, set_determinism
from .stopping import EXIT_INTERRUPTED, StopRequest, stop_on_signals
from .training import plan
from .training.build import build_trainee
from .training.loop import Outcome, train as train_loop
from .training.losses import loss_reference
from .training.trainee import TraineeBase
from .writing import RunWriter, member_names, test_selection_warnings

__all__ = ["EXIT_INTERRUPTED", "train", "train_runs"]
log = logging.getLogger(__name__)
_warned: set[str] = set()  # each warning once per process (a compare's seeds share it)
OnEpoch = Callable[[dict], Optional[Outcome]]


def train(config: RunConfig | dict, *, run_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Train one run and write its directory; returns its result (also in result.json). Options as
    train_runs. It writes no report (the CLI does): tinyvision.report.write_report(result["run_dir"])."""
    return train_runs([config], [run_dir] if run_dir is not None else None, **options)[0]


def train_runs(configs: Sequence[RunConfig | dict], run_dirs: Optional[Sequence[str | Path]] = None, *,
               out: str | Path = "runs", data: Optional[ImageDataset] = None, quiet: bool = False,
               resume: bool = False, progress_prefix: str = "", on_epoch: Optional[OnEpoch] = None,
               model: Any = None, loss: Any = None, stop: Optional[StopRequest] = None) -> list[dict[str, Any]]:
    """Train K >= 1 runs (K > 1: one population, plan.check_members) into their directories (new
    ones under `out` where not given); returns each run's result, as its result.json holds it.

    model / loss: an nn.Module class, instance or zero-argument factory / a callable (outputs,
    targets) -> scalar, given in Python (a config dict's "model" and "loss" may hold them too).
    resume=True continues the runs in `run_dirs` from their checkpoint. on_epoch(row) (one run)
    follows each epoch's files; returning an Outcome (e.g. Outcome("pruned", why)) ends the run
    with it. A stop request (`stop`, or Ctrl-C/SIGTERM) ends the runs still training at the next
    step, checkpointed ("interrupted"). Out of device memory or disk space, the runs are marked
    "failed" and a one-line ResourceError is raised (the last checkpoint stays). Under torchrun
    only rank 0 writes."""
    cfgs, source, loss_fn = resolve(configs, model, loss)
    writer = distributed.context().is_writer
    with stop_on_signals(stop) as stop, ExitStack() as held:
        previous = runs.read_result(run_dirs[0]) if resume and run_dirs and run_dirs[0] is not None else None
        trainee, data = prepare(cfgs, source, loss_fn, data, decided=(previous or {}).get("auto"))
        given = [Path(d) if d is not None else None for d in (run_dirs or [None] * len(cfgs))]
        dirs = _open(cfgs, given, out, resume, held) if writer else given  # other torchrun ranks only read
        rw = RunWriter(trainee, source, data, dirs if writer else [None] * len(cfgs), started=runs.now())
        if resume and dirs[0] is not None and (dirs[0] / runs.CHECKPOINT).exists():
            restore_checkpoint(dirs[0] / runs.CHECKPOINT, trainee, member_names(dirs))
            rw.skip_finished()
        if resume and writer:
            _record_configs(cfgs, dirs)
        try:
            rw.begin()
            _train(trainee, rw, stop, quiet or not writer, progress_prefix, on_epoch)
            return rw.finish()
        except (OSError, torch.OutOfMemoryError) as exc:
            raise rw.failed(exc) from None


def prepare(configs: Sequence[RunConfig | dict], model: Any = None, loss: Any = None,
            data: Optional[ImageDataset] = None, decided: Optional[dict[str, Any]] = None
            ) -> tuple[TraineeBase, ImageDataset]:
    """The runs built and ready to train from their first step, nothing written (lr-find,
    benchmarks): the runtime set up, the data loaded, the model checked, the settings left at
    auto measured (probe.py; `decided`: a resumed run's own earlier choice, kept), the trainee
    built. `model` may be a resolved ModelSource."""
    cfgs, source, loss_fn = resolve(configs, model, loss)
    if len(cfgs) > 1:
        plan.check_members(cfgs)
    device = _runtime(cfgs[0])
    norm = run_normalization(cfgs[0], data)  # before loading: statistics of the config's data are cached
    data = data or load_data(cfgs[0])
    source.check(data.input_shape, data.num_classes, cfgs[0].model_overrides())  # before anything is written
    decision = probe.Decision.from_record(decided) if decided else probe.decide(cfgs[0], source, data, device)
    configure_threads(decision.threads)
    chosen = {"precision": decision.precision, "threads": decision.threads, "channels_last": decision.channels_last}
    trainee = build_trainee([c.model_copy(update=chosen) for c in cfgs], source, data, norm, device, loss_fn)
    trainee.decision = decision
    for message in test_selection_warnings(cfgs[0]):
        _warn_once(message)
    return trainee, data


def _train(trainee: TraineeBase, rw: "RunWriter", stop: StopRequest, quiet: bool, prefix: str,
           on_epoch: Optional[OnEpoch]) -> None:
    """The loop, with each epoch's files written as it ends."""
    cfg, k_all = trainee.members[0].cfg, len(trainee.members)
    progress = EpochProgress(cfg.epochs, quiet=quiet, prefix=prefix, val_name=runs.val_name(cfg))
    for end in train_loop(trainee, stop, progress if k_all == 1 else None):
        if k_all == 1 and end.rows:
            progress.end_epoch(end.rows[0])
        elif end.rows:
            progress.message(prefix + population_line(end.epoch, cfg.epochs, trainee.members, end.rows))
        rw.epoch_written()
        if on_epoch is not None:
            for k, row in end.rows.items():
                outcome = on_epoch(row)
                if outcome is not None:
                    trainee.stop(k, outcome)
    progress.close()
    for k, member in enumerate(trainee.members):
        if member.outcome is not None and member.outcome.status == "diverged" and not quiet:
            progress.message(f"{prefix}{'' if k_all == 1 else f'seed {member.cfg.seed}: '}diverged: "
                             f"{member.outcome.reason}")


def resolve(configs: Sequence[RunConfig | dict], model: Any = None,
            loss: Any = None) -> tuple[list[RunConfig], ModelSource, Optional[Callable[..., Any]]]:
    """Validated configs, with a model and loss given as Python objects replaced by the names
    config.yaml records; the model source (shared by every run) and the loss callable, if any."""
    raw = [dict(c) if isinstance(c, dict) else c for c in configs]
    for values in (r for r in raw if isinstance(r, dict)):
        if values.get("model") is not None and not isinstance(values["model"], str):
            model = values.pop("model")
        if values.get("loss") is not None and not isinstance(values["loss"], str):
            loss = values.pop("loss")
    cfgs = [r if isinstance(r, RunConfig) else make_config(r) for r in raw]
    if model is not None:
        source = model if isinstance(model, ModelSource) else resolve_model(model, cfgs[0].model_args)
        cfgs = [c.model_copy(update={"model": source.reference}) for c in cfgs]
    else:
        source = resolve_model(cfgs[0].model, cfgs[0].model_args)
    if loss is not None:
        cfgs = [c.model_copy(update={"loss": loss_reference(loss)}) for c in cfgs]
    return cfgs, source, loss


def _runtime(cfg: RunConfig) -> torch.device:
    """The device, threads and determinism the runs ask for (shared by runs trained together)."""
    if cfg.deterministic:  # cuBLAS reads it once, when CUDA starts: set it before anything touches CUDA
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = distributed.setup(distributed.context(), resolve_device(cfg.device))
    configure_threads(cfg.threads)  # on a GPU too: the CPU side (data, Python) of --jobs workers
    set_determinism(cfg.deterministic, device)
    return device


def _open(cfgs: Sequence[RunConfig], run_dirs: Optional[Sequence[str | Path | None]], out: str | Path,
          resume: bool, held: ExitStack) -> list[Path]:
    """Each run's directory, claimed (new) or reopened (resume) and locked while `held` is open."""
    given = list(run_dirs) if run_dirs is not None else [None] * len(cfgs)
    return [rundir.open_run_dir(d, out, cfg, resume=resume, held=held) for d, cfg in zip(given, cfgs)]


def _record_configs(cfgs: Sequence[RunConfig], dirs: Sequence[Path | None]) -> None:
    """On resume, a config that differs from the run's config.yaml (more epochs, another data_dir:
    cli --resume) replaces it: only now, once data, model and checkpoint were found to fit, so that
    a resume refused on the way leaves the run's files as they were."""
    for cfg, run_dir in zip(cfgs, dirs):
        if run_dir is not None and (not (run_dir / runs.CONFIG).exists() or runs.read_config(run_dir) != cfg):
            runs.write_config(run_dir, cfg)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)
