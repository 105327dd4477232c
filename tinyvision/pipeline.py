"""One run end to end: data -> model -> fit -> test evaluation -> run directory.

`train(config)` is what `tinyvision train` and every experiment call; it returns the run's
result dict (the same that is written to result.json).
"""
from __future__ import annotations

import dataclasses
import functools
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from . import distributed, runs
from .checkpoint import load_state, save_state, save_weights
from .config import RunConfig, make_config
from .data import ImageDataset, Split, load_dataset
from .data.loader import DeviceLoader, Normalization
from .evaluate import class_report, predict_loader, split_metrics
from .models import create_model, summarize
from .optim import build_optimizer, build_scheduler, init_weights
from .progress import EpochProgress
from .runtime import configure_threads, resolve_device, set_determinism, use_channels_last
from .train import DivergedError, Hooks, Interrupted, TrainState, fit, snapshot

EXIT_INTERRUPTED = 130  # documented exit code of a run stopped by Ctrl-C / SIGTERM


class StopRun(Exception):
    """Raised by an on_epoch callback to end a run early with its own status (e.g. "pruned")."""

    def __init__(self, status: str, reason: str = "") -> None:
        super().__init__(reason or status)
        self.status = status


@functools.lru_cache(maxsize=4)
def _cached_dataset(name: str, data_dir: Optional[str], val_size: Any, split_seed: int,
                    image_size: Optional[int], channels: Optional[int]) -> ImageDataset:
    return load_dataset(name, data_dir=data_dir, val_size=val_size, seed=split_seed,
                        image_size=image_size, channels=channels)


def load_data(cfg: RunConfig) -> ImageDataset:
    """The config's dataset (cached in-process: compare and sweeps load it once)."""
    data = _cached_dataset(cfg.dataset, cfg.data_dir, cfg.val_size, cfg.split_seed,
                           cfg.image_size, cfg.channels)
    if cfg.train_subset and cfg.train_subset < len(data.train):
        n = cfg.train_subset
        data = dataclasses.replace(data, train=Split(data.train.images[:n], data.train.labels[:n]))
    return data


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
    device = distributed.setup(ctx, resolve_device(cfg.device))
    if device.type == "cpu":
        configure_threads(cfg.threads)
    set_determinism(cfg.deterministic, device)
    torch.manual_seed(cfg.seed)
    data = data or load_data(cfg)
    norm = Normalization.from_split(data.train)
    net = create_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_overrides())
    init_weights(net, cfg.init)
    channels_last = use_channels_last(device, net)
    net = net.to(device, memory_format=torch.channels_last) if channels_last else net.to(device)
    model = distributed.wrap(net, ctx, device)
    model = torch.compile(model) if cfg.compile else model
    loader_args = dict(device=device, norm=norm, channels_last=channels_last)
    train_loader = DeviceLoader(data.train, distributed.local_batch_size(cfg.batch_size, ctx),
                                shuffle=True, seed=cfg.seed, augment=cfg.augment,
                                translate=cfg.translate, rank=ctx.rank, world_size=ctx.world_size,
                                **loader_args)
    val_loader = DeviceLoader(data.val, cfg.eval_batch_size, **loader_args)
    optimizer = build_optimizer(net, cfg, fused=device.type == "cuda")
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    state = TrainState(model, optimizer, scheduler)
    return Setup(cfg, data, norm, device, net, state, train_loader, val_loader)


def weights_metadata(setup: Setup) -> dict[str, Any]:
    cfg, data = setup.cfg, setup.data
    return {"model": cfg.model, "spec": getattr(setup.net, "spec", cfg.model),
            "overrides": cfg.model_overrides(), "input_shape": list(data.input_shape),
            "classes": list(data.classes), "num_classes": data.num_classes,
            "mean": list(setup.norm.mean), "std": list(setup.norm.std), "dataset": cfg.dataset,
            "pixel_max": data.pixel_max,
            "format": "tinyvision-weights-1"}


# -- checkpoints -------------------------------------------------------------------------------

def _training_state(setup: Setup) -> dict[str, Any]:
    s = setup.state
    rng = {"torch": torch.get_rng_state()}
    if setup.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(setup.device)
    return {"model": setup.net.state_dict(), "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict() if s.scheduler else None,
            "epoch": s.epoch, "step": s.step, "best_loss": s.best_loss, "best_epoch": s.best_epoch,
            "best_state": s.best_state, "bad_epochs": s.bad_epochs, "history": s.history,
            "stopped_early": s.stopped_early, "partial": s.partial, "rng": rng}


def save_checkpoint(setup: Setup, run_dir: Path) -> None:
    save_state(run_dir / runs.CHECKPOINT, _training_state(setup))


def restore_checkpoint(setup: Setup, run_dir: Path) -> None:
    saved = load_state(run_dir / runs.CHECKPOINT)
    s = setup.state
    setup.net.load_state_dict(saved["model"])
    s.optimizer.load_state_dict(saved["optimizer"])
    if s.scheduler is not None and saved["scheduler"] is not None:
        s.scheduler.load_state_dict(saved["scheduler"])
    for key in ("epoch", "step", "best_loss", "best_epoch", "best_state", "bad_epochs",
                "history", "stopped_early", "partial"):
        setattr(s, key, saved[key])
    torch.set_rng_state(saved["rng"]["torch"])
    if "cuda" in saved["rng"] and setup.device.type == "cuda":
        torch.cuda.set_rng_state(saved["rng"]["cuda"], setup.device)


# -- interrupts --------------------------------------------------------------------------------

class StopFlag:
    """Set by the first SIGINT/SIGTERM; the loop stops at the next step boundary."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested


@contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    flag = StopFlag()

    def request(signum: int, frame: Any) -> None:
        flag.requested = True  # a second signal changes nothing: the save is already coming

    try:
        old = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: no signal handling
        yield flag
        return
    try:
        yield flag
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# -- the run -----------------------------------------------------------------------------------

def _base_result(setup: Setup, run_dir: Path, status: str) -> dict[str, Any]:
    summary = summarize(setup.net, setup.data.input_shape)
    s = setup.state
    best = next((r for r in s.history if r["epoch"] == s.best_epoch), None)
    return {"status": status, "run_dir": str(run_dir), "dataset": setup.cfg.dataset,
            "model": setup.cfg.model, "spec": getattr(setup.net, "spec", setup.cfg.model),
            "params": summary.params, "macs": summary.macs, "seed": setup.cfg.seed,
            "device": str(setup.device), "threads": torch.get_num_threads(),
            "epochs_run": s.epoch, "best_epoch": s.best_epoch, "stopped_early": s.stopped_early,
            "best_val": {k.removeprefix("val_"): best[k] for k in ("val_loss", "val_accuracy", "val_error")} if best else None,
            "train_seconds": sum(r["seconds"] for r in s.history),
            "mean_epoch_seconds": (sum(r["seconds"] for r in s.history) / len(s.history)) if s.history else None,
            "classes": list(setup.data.classes), "versions": runs.environment()}


def _evaluate_test(setup: Setup) -> dict[str, Any]:
    loader = DeviceLoader(setup.data.test, setup.cfg.eval_batch_size, device=setup.device,
                          norm=setup.norm, channels_last=setup.train_loader.channels_last)
    pred = predict_loader(setup.state.model, loader, tta=setup.cfg.tta)
    report = class_report(pred, setup.data.classes)
    return {**split_metrics(pred), "per_class": {"precision": report.precision, "recall": report.recall,
                                                 "support": report.support},
            "confusion": report.confusion, "most_confused": report.most_confused}


def _open_run_dir(setup: Setup, run_dir: str | Path | None, out: str | Path, resume: bool,
                  writer: bool) -> Optional[Path]:
    """Resume from the directory's checkpoint, or claim a new directory (writer only)."""
    if resume:
        run_dir = Path(run_dir)
        if (run_dir / runs.CHECKPOINT).exists():
            restore_checkpoint(setup, run_dir)
        return run_dir
    if not writer:
        return Path(run_dir) if run_dir else None
    run_dir = runs.claim_run_dir(run_dir) if run_dir else runs.new_run_dir(out, setup.cfg)
    runs.write_config(run_dir, setup.cfg)
    return run_dir


def _fit(setup: Setup, hooks: Hooks, progress: EpochProgress, save: Callable[[], None]) -> tuple[str, str]:
    """fit() with its endings turned into a (status, reason)."""
    try:
        fit(setup.state, setup.train_loader, setup.val_loader, setup.cfg, hooks)
        return "completed", ""
    except Interrupted:
        progress.close()
        save()  # resumable from this very step
        return "interrupted", "stopped by a signal; resume with --resume"
    except StopRun as exc:
        progress.close()
        return exc.status, str(exc)
    except DivergedError as exc:
        progress.close()
        progress.message(f"diverged: {exc}")
        return "diverged", str(exc)


def train(config: RunConfig | dict, *, run_dir: str | Path | None = None, out: str | Path = "runs",
          data: Optional[ImageDataset] = None, quiet: bool = False, resume: bool = False,
          progress_prefix: str = "", on_epoch: Optional[Callable[[dict], None]] = None) -> dict[str, Any]:
    """Train one run and write its directory; returns the result (also in result.json).

    resume=True continues the run in `run_dir` from its last checkpoint. on_epoch(row) is called
    after each epoch's metrics are saved; it may raise StopRun to end the run with a status.
    Under torchrun only rank 0 writes.
    """
    cfg = config if isinstance(config, RunConfig) else make_config(config)
    clock = runs.Stopwatch()
    writer = distributed.context().is_writer
    setup = build(cfg, data)
    run_dir = _open_run_dir(setup, run_dir, out, resume, writer)
    started = runs.now()
    if writer:
        runs.write_result(run_dir, {"status": "running", "started": started})
    progress = EpochProgress(cfg.epochs, quiet=quiet or not writer, prefix=progress_prefix)

    def save() -> None:
        if writer:
            save_checkpoint(setup, run_dir)

    def on_epoch_end(state: TrainState, row: dict) -> None:
        progress.end_epoch(row)
        if writer:
            runs.write_metrics(run_dir, state.history)
        save()
        if on_epoch is not None:
            on_epoch(row)

    with graceful_stop() as stop:
        hooks = Hooks(on_epoch_end=on_epoch_end, should_stop=stop, progress=progress.start_epoch)
        status, reason = _fit(setup, hooks, progress, save)
    result = _base_result(setup, run_dir, status)
    result.update(started=started)
    if reason and status != "completed":
        result["reason"] = reason
    if status == "completed":
        if writer:
            save_weights(run_dir / runs.WEIGHTS, setup.net.state_dict(), weights_metadata(setup))
        result["test"] = _evaluate_test(setup)
    result.update(total_seconds=clock(), finished=runs.now())
    if writer:
        runs.write_result(run_dir, result)  # last: its status marks the directory complete
    return result
