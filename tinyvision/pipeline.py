"""One run end to end: build -> fit -> test -> write.

`train(config)` is what `tinyvision train` and every experiment call; it returns the run's
result dict (the same that is written to result.json). The jobs it sequences have their own
owners: data (data.load_data), the loop (loop.fit), checkpoints (checkpoint), stop signals
(runtime), the run directory and its files (runs).
"""
from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from . import distributed, mistakes, runs
from .checkpoint import restore_checkpoint, save_checkpoint, save_weights
from .config import RunConfig, make_config
from .data import ImageDataset, load_data
from .data.cached import run_normalization
from .data.loader import DeviceLoader, Normalization
from .evaluate import Predictions, class_report, predict_loader, split_metrics
from .loop import Hooks, Outcome, TrainState, fit, restores_best
from .models import create_model, summarize
from .models.summary import summary_record
from .optim import build_optimizer, build_scheduler, init_weights
from .progress import EpochProgress
from .runtime import (EXIT_INTERRUPTED, check_compile, configure_threads, graceful_stop, precision_name, resolve_device,
                      set_determinism, use_channels_last)

__all__ = ["EXIT_INTERRUPTED", "Setup", "build", "load_data", "train"]
log = logging.getLogger(__name__)
_warned: set[str] = set()  # each warning once per process (a compare's seeds share it)


@dataclass
class Setup:
    """The live objects of one run."""

    cfg: RunConfig
    data: ImageDataset
    norm: Normalization
    device: torch.device
    net: nn.Module  # the plain module (weights, summaries)
    state: TrainState  # state.model may be the compiled wrapper of net
    train_loader: DeviceLoader
    val_loader: DeviceLoader


def build(cfg: RunConfig, data: Optional[ImageDataset] = None) -> Setup:
    ctx = distributed.context()
    if cfg.deterministic:  # cuBLAS reads it once, when CUDA starts: set it before anything touches CUDA
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = distributed.setup(ctx, resolve_device(cfg.device))
    configure_threads(cfg.threads)  # on a GPU too: the CPU side (data, Python) of --jobs workers
    set_determinism(cfg.deterministic, device)
    torch.manual_seed(cfg.seed)
    norm = run_normalization(cfg, data)
    data = data or load_data(cfg)
    net = create_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_overrides())
    init_weights(net, cfg.init)
    channels_last = use_channels_last(device, net)
    net = net.to(device, memory_format=torch.channels_last) if channels_last else net.to(device)
    model = distributed.wrap(net, ctx, device)
    if cfg.compile:
        check_compile(device)  # one line naming the missing compiler, not an Inductor traceback
    model = torch.compile(model) if cfg.compile else model
    loader_args = dict(device=device, norm=norm, channels_last=channels_last)
    train_loader = DeviceLoader(data.train, distributed.local_batch_size(cfg.batch_size, ctx),
                                shuffle=True, seed=cfg.seed, augment=cfg.augment,
                                translate=cfg.translate, rank=ctx.rank, world_size=ctx.world_size,
                                **loader_args)
    # val_size=0: no validation split; the test set is watched each epoch (labelled as such)
    val_loader = DeviceLoader(data.test if cfg.validates_on_test else data.val, cfg.eval_batch_size, **loader_args)
    optimizer = build_optimizer(net, cfg, fused=device.type == "cuda")
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    state = TrainState(model, optimizer, scheduler)
    return Setup(cfg, data, norm, device, net, state, train_loader, val_loader)


def weights_metadata(setup: Setup) -> dict[str, Any]:
    """What model.safetensors carries besides the weights: enough to rebuild and use the model."""
    cfg, data = setup.cfg, setup.data
    return {"model": cfg.model, "spec": getattr(setup.net, "spec", cfg.model),
            "overrides": cfg.model_overrides(), "input_shape": list(data.input_shape),
            "classes": list(data.classes), "num_classes": data.num_classes,
            "mean": list(setup.norm.mean), "std": list(setup.norm.std), "dataset": cfg.dataset,
            "pixel_max": data.pixel_max, "normalize": cfg.model_dump()["normalize"],
            "format": "tinyvision-weights-1"}


def run_facts(setup: Setup) -> dict[str, Any]:
    """The result.json fields only the live run knows."""
    cfg, state = setup.cfg, setup.state
    summary = summarize(setup.net, setup.data.input_shape)
    return {"spec": getattr(setup.net, "spec", cfg.model), "params": summary.params, "macs": summary.macs,
            "device": str(setup.device), "precision": precision_name(cfg.precision, setup.device, setup.net),
            "classes": list(setup.data.classes), "layers": summary_record(summary),
            "validation": runs.validation_label(cfg, len(setup.data.val)),
            "evaluated_weights": runs.evaluated_weights(state.best_epoch, state.epoch, restores_best(cfg)),
            "warnings": test_selection_warnings(cfg)}


def _warn_once(messages: list[str]) -> None:
    for message in messages:
        if message not in _warned:
            _warned.add(message)
            log.warning(message)


def test_selection_warnings(cfg: RunConfig) -> list[str]:
    """What makes the test score optimistic: choices made by watching the test set (val_size=0)."""
    if not cfg.validates_on_test:
        return []
    chosen = [what for what, on in (("early stopping (patience)", cfg.patience is not None),
                                    ("the best epoch's weights (restore_best)", restores_best(cfg))) if on]
    return [f"val_size=0 validates on the test set, and {' and '.join(chosen)} is chosen by it: "
            "the test score is optimistic; hold out a validation split (val_size > 0) for an unbiased one"] \
        if chosen else []


def _predict_test(setup: Setup) -> Predictions:
    loader = DeviceLoader(setup.data.test, setup.cfg.eval_batch_size, device=setup.device,
                          norm=setup.norm, channels_last=setup.train_loader.channels_last)
    return predict_loader(setup.state.model, loader, tta=setup.cfg.tta, flip=setup.cfg.flips,
                          precision=setup.cfg.precision)


def summarize_test(pred: Predictions, classes: tuple[str, ...]) -> dict[str, Any]:
    """result.json's "test": loss, accuracy, per-class precision/recall, confusion matrix."""
    report = class_report(pred, classes)
    return {**split_metrics(pred), "per_class": {"precision": report.precision, "recall": report.recall,
                                                 "support": report.support},
            "confusion": report.confusion, "most_confused": report.most_confused}


def _save_weights(setup: Setup, run_dir: Path, status: str) -> None:
    """model.safetensors: the best weights of a completed run, or of a diverged one's good epochs."""
    if status == "completed":
        save_weights(run_dir / runs.WEIGHTS, setup.net.state_dict(), weights_metadata(setup))
    elif status == "diverged" and setup.state.best_state is not None:
        save_weights(run_dir / runs.WEIGHTS, setup.state.best_state, weights_metadata(setup))


def _run_hooks(setup: Setup, run_dir: Optional[Path], progress: EpochProgress, stop: Callable[[], bool],
               on_epoch: Optional[Callable[[dict], Optional[Outcome]]]) -> Hooks:
    """After each epoch: progress line, metrics.csv, checkpoint, the caller's on_epoch."""

    def on_epoch_end(state: TrainState, row: dict) -> Optional[Outcome]:
        progress.end_epoch(row)
        if run_dir is not None:
            runs.write_metrics(run_dir, state.history, val_name=runs.val_name(setup.cfg))
            runs.write_steps(run_dir, state.steps)
        if run_dir is not None:  # (a signal during validation: the loop stops after this epoch's hooks)
            save_checkpoint(run_dir / runs.CHECKPOINT, state, setup.net, setup.train_loader)
        return on_epoch(row) if on_epoch is not None else None

    return Hooks(on_epoch_end=on_epoch_end, should_stop=stop, progress=progress.start_epoch)


def train(config: RunConfig | dict, *, run_dir: str | Path | None = None, out: str | Path = "runs",
          data: Optional[ImageDataset] = None, quiet: bool = False, resume: bool = False,
          progress_prefix: str = "",
          on_epoch: Optional[Callable[[dict], Optional[Outcome]]] = None) -> dict[str, Any]:
    """Train one run and write its directory; returns the result (also in result.json). It writes
    no report (the CLI does): call tinyvision.report.write_report(result["run_dir"]) for one.

    resume=True continues the run in `run_dir` from its last checkpoint. on_epoch(row) is called
    after each epoch's metrics and checkpoint are saved; returning an Outcome (e.g.
    Outcome("pruned", why)) ends the run with that status. Under torchrun only rank 0 writes.
    A first SIGINT/SIGTERM anywhere in here stops at the next step boundary with a checkpoint;
    further ones change nothing until result.json is written. Out of device memory or disk space,
    the run is marked "failed" with the reason and a one-line ResourceError is raised (the last
    checkpoint stays: resume once there is room).
    """
    cfg = config if isinstance(config, RunConfig) else make_config(config)
    clock, started = runs.Stopwatch(), runs.now()
    writer = distributed.context().is_writer
    with graceful_stop() as stop, ExitStack() as held:
        setup = build(cfg, data)
        _warn_once(test_selection_warnings(cfg))
        if writer:
            run_dir = runs.open_run_dir(run_dir, out, cfg, resume=resume, held=held)
        run_dir = Path(run_dir) if run_dir is not None else None
        if resume and run_dir is not None and (run_dir / runs.CHECKPOINT).exists():
            restore_checkpoint(run_dir / runs.CHECKPOINT, setup.state, setup.net, setup.train_loader, cfg.model)
        written = run_dir if writer else None  # where this process writes
        try:
            if written is not None:
                # on resume: rows past the checkpoint are redone
                runs.write_metrics(written, setup.state.history, val_name=runs.val_name(cfg))
                runs.write_steps(written, setup.state.steps)
                runs.write_result(written, {"status": "running", "started": started})
            progress = EpochProgress(cfg.epochs, quiet=quiet or not writer, prefix=progress_prefix,
                                     val_name=runs.val_name(cfg))
            outcome = fit(setup.state, setup.train_loader, setup.val_loader, cfg,
                          _run_hooks(setup, written, progress, stop, on_epoch))
            progress.close()
            if outcome.status == "diverged":
                progress.message(f"diverged: {outcome.reason}")
            result = runs.build_result(outcome, setup.state, cfg=cfg, run_dir=run_dir, facts=run_facts(setup))
            result["started"] = started
            finish_run(setup, outcome, result, written)
        except (OSError, torch.OutOfMemoryError) as exc:
            raise runs.mark_failed(written, exc, started) from None
        result.update(total_seconds=clock(), finished=runs.now())
        if written is not None:
            runs.write_result(written, result)  # last: its status marks the directory complete
    return result


def finish_run(setup: Setup, outcome: Outcome, result: dict[str, Any], written: Optional[Path]) -> None:
    """After fit: the checkpoint of an interrupted run, the weights, the test set."""
    if written is not None:
        if outcome.status == "interrupted":
            save_checkpoint(written / runs.CHECKPOINT, setup.state, setup.net, setup.train_loader)
        runs.write_steps(written, setup.state.steps)  # rows of a part epoch too
        _save_weights(setup, written, outcome.status)  # the last checkpoint stays: the last good epoch
    if outcome.status == "completed":
        pred = _predict_test(setup)
        result["test"] = summarize_test(pred, setup.data.classes)
        if written is not None:
            runs.write_predictions(written, pred, setup.data.test.images, setup.data.classes)
            mistakes.write_test_mistakes(written, pred, setup.cfg, setup.data.classes)  # folder datasets
