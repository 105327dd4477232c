"""One run end to end: data -> model -> fit -> test evaluation -> run directory.

`train(config)` is what `tinyvision train` and every experiment call; it returns the run's
result dict (the same that is written to result.json).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import random
import signal
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from . import distributed, runs
from .checkpoint import load_state, one_line, remove_temp_files, save_state, save_weights
from .config import RunConfig, make_config
from .data import ImageDataset, Split, load_dataset
from .errors import DataError
from .data.loader import DeviceLoader, Normalization
from .evaluate import class_report, predict_loader, split_metrics
from .models import create_model, summarize
from .optim import build_optimizer, build_scheduler, init_weights
from .progress import EpochProgress
from .runtime import configure_threads, precision_name, resolve_device, set_determinism, use_channels_last
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
    if cfg.deterministic:  # cuBLAS reads it once, when CUDA starts: set it before anything touches CUDA
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
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

CHECKPOINT_FORMAT = "tinyvision-checkpoint-2"
_COUNTERS = ("epoch", "step", "best_epoch", "bad_epochs")  # non-negative ints of TrainState


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Every random generator a run may draw from (dropout uses torch's; the loader is seeded)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "numpy": [name, keys.tolist(), pos, has_gauss, gauss]}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def _set_rng_state(rng: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    if "python" in rng:  # absent from checkpoints of earlier versions
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    if "numpy" in rng:
        name, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


def _loader_position(setup: Setup) -> dict[str, Any]:
    """What fixes the training order: with epoch and step it is the loader's exact position."""
    loader = setup.train_loader
    return {"seed": loader.seed, "batch_size": loader.batch_size, "samples": len(loader.labels),
            "world_size": loader.world_size, "epoch": setup.state.epoch, "step": setup.state.step}


def _training_state(setup: Setup) -> dict[str, Any]:
    s = setup.state
    return {"format": CHECKPOINT_FORMAT, "model": setup.net.state_dict(),
            "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict() if s.scheduler else None,
            "epoch": s.epoch, "step": s.step, "best_loss": s.best_loss, "best_epoch": s.best_epoch,
            "best_state": s.best_state, "bad_epochs": s.bad_epochs, "history": s.history,
            "stopped_early": s.stopped_early, "partial": s.partial, "rng": _rng_state(setup.device),
            "loader": _loader_position(setup)}


def save_checkpoint(setup: Setup, run_dir: Path) -> None:
    """The whole training state, written atomically (a kill leaves the previous checkpoint)."""
    save_state(run_dir / runs.CHECKPOINT, _training_state(setup))


def restore_checkpoint(setup: Setup, run_dir: Path) -> None:
    """Continue from run_dir's checkpoint; a file that does not fit this run is a DataError."""
    path = run_dir / runs.CHECKPOINT
    saved = load_state(path)
    try:
        _check_checkpoint(setup, saved, path)
        _restore(setup, saved)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise DataError(f"{path}: not a checkpoint of this run ({one_line(exc)})") from None


def _check_checkpoint(setup: Setup, saved: Any, path: Path) -> None:
    """Types, counters and the loader's order: refuse a checkpoint this config cannot continue."""
    if not (isinstance(saved, dict) and isinstance(saved.get("model"), dict)
            and isinstance(saved.get("history"), list)):
        raise DataError(f"{path}: expected a tinyvision checkpoint (model, optimizer, epoch, step...)")
    if any(type(saved[k]) is not int or saved[k] < 0 for k in _COUNTERS):
        raise DataError(f"{path}: expected non-negative integer {', '.join(_COUNTERS)}")
    if saved["step"] > len(setup.train_loader):
        raise DataError(f"{path}: step {saved['step']} is beyond an epoch of {len(setup.train_loader)} steps")
    loader = saved.get("loader")  # absent from checkpoints of earlier versions
    if loader is not None:
        now = _loader_position(setup)
        changed = ", ".join(f"{k} {loader.get(k)}, now {now[k]}" for k in ("seed", "batch_size", "samples",
                                                                         "world_size") if loader.get(k) != now[k])
        if changed:
            raise DataError(f"{path}: written for another training order ({changed}); "
                            "resume with the run's own config.yaml")
    shapes = {k: v.shape for k, v in setup.net.state_dict().items()}
    for name in ("model", "best_state"):
        tensors = saved[name]
        if tensors is not None and {k: getattr(v, "shape", None) for k, v in tensors.items()} != shapes:
            raise DataError(f"{path}: its {name} weights do not fit model {setup.cfg.model!r}")


def _restore(setup: Setup, saved: dict[str, Any]) -> None:
    s = setup.state
    setup.net.load_state_dict(saved["model"])
    s.optimizer.load_state_dict(saved["optimizer"])
    if s.scheduler is not None and saved["scheduler"] is not None:
        s.scheduler.load_state_dict(saved["scheduler"])
    for key in ("epoch", "step", "best_loss", "best_epoch", "best_state", "bad_epochs",
                "history", "stopped_early", "partial"):
        setattr(s, key, saved[key])
    s.best_loss = float(s.best_loss)
    _set_rng_state(saved["rng"], setup.device)


# -- interrupts --------------------------------------------------------------------------------

class StopFlag:
    """Set by the first SIGINT/SIGTERM; the loop stops at the next step boundary."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested


# Signals that stop a run at its next step with a checkpoint (pool workers: leave_sigterm_fatal).
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM]


def leave_sigterm_fatal() -> None:
    """For a process-pool worker (experiments, tuning): only Ctrl-C stops its run gracefully. When a
    worker dies the pool SIGTERMs the others (their queues may be locked for good); one that took it
    as a request to stop at its next step would then wait on those queues forever."""
    global STOP_SIGNALS
    STOP_SIGNALS = [signal.SIGINT]


@contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    flag = StopFlag()

    def request(signum: int, frame: Any) -> None:
        flag.requested = True  # a second signal changes nothing: the save is already coming

    try:
        old = {sig: signal.signal(sig, request) for sig in STOP_SIGNALS}
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
            "precision": precision_name(setup.cfg.precision, setup.device, setup.net),
            "epochs_run": s.epoch, "best_epoch": s.best_epoch, "stopped_early": s.stopped_early,
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "best_val": {k.removeprefix("val_"): best[k] for k in ("val_loss", "val_accuracy", "val_error")} if best else None,
            "train_seconds": sum(r["seconds"] for r in s.history),
            "mean_epoch_seconds": (sum(r["seconds"] for r in s.history) / len(s.history)) if s.history else None,
            "classes": list(setup.data.classes), "versions": runs.environment()}


def _evaluate_test(setup: Setup) -> dict[str, Any]:
    loader = DeviceLoader(setup.data.test, setup.cfg.eval_batch_size, device=setup.device,
                          norm=setup.norm, channels_last=setup.train_loader.channels_last)
    pred = predict_loader(setup.state.model, loader, tta=setup.cfg.tta, flip=setup.cfg.flips,
                          precision=setup.cfg.precision)
    report = class_report(pred, setup.data.classes)
    return {**split_metrics(pred), "per_class": {"precision": report.precision, "recall": report.recall,
                                                 "support": report.support},
            "confusion": report.confusion, "most_confused": report.most_confused}


def _open_run_dir(setup: Setup, run_dir: str | Path | None, out: str | Path, resume: bool,
                  writer: bool, held: ExitStack) -> Optional[Path]:
    """Resume from the directory's checkpoint, or claim a new directory; the writer locks it."""
    if not writer:
        if resume and (Path(run_dir) / runs.CHECKPOINT).exists():
            restore_checkpoint(setup, Path(run_dir))
        return Path(run_dir) if run_dir else None
    if run_dir is None:
        run_dir = runs.new_run_dir(out, setup.cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    held.enter_context(runs.lock_run_dir(run_dir))
    remove_temp_files(run_dir)  # what a killed writer left; the lock says none is writing now
    if resume:
        if (run_dir / runs.CHECKPOINT).exists():
            restore_checkpoint(setup, run_dir)
        runs.write_metrics(run_dir, setup.state.history)  # rows past the checkpoint are redone
        return run_dir
    runs.claim_run_dir(run_dir)
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
    except DivergedError as exc:  # the last checkpoint (the last good epoch) is left as it was
        progress.close()
        progress.message(f"diverged: {exc}")
        return "diverged", str(exc)


def _save_weights(setup: Setup, run_dir: Path, status: str) -> None:
    """model.safetensors: the best weights of a completed run, or of a diverged one's good epochs."""
    if status == "completed":
        save_weights(run_dir / runs.WEIGHTS, setup.net.state_dict(), weights_metadata(setup))
    elif status == "diverged" and setup.state.best_state is not None:
        save_weights(run_dir / runs.WEIGHTS, setup.state.best_state, weights_metadata(setup))


def train(config: RunConfig | dict, *, run_dir: str | Path | None = None, out: str | Path = "runs",
          data: Optional[ImageDataset] = None, quiet: bool = False, resume: bool = False,
          progress_prefix: str = "", on_epoch: Optional[Callable[[dict], None]] = None) -> dict[str, Any]:
    """Train one run and write its directory; returns the result (also in result.json).

    resume=True continues the run in `run_dir` from its last checkpoint. on_epoch(row) is called
    after each epoch's metrics are saved; it may raise StopRun to end the run with a status.
    Under torchrun only rank 0 writes. A first SIGINT/SIGTERM anywhere in here stops at the next
    step boundary with a checkpoint; further ones change nothing until result.json is written.
    """
    cfg = config if isinstance(config, RunConfig) else make_config(config)
    clock = runs.Stopwatch()
    writer = distributed.context().is_writer
    with graceful_stop() as stop, ExitStack() as held:
        setup = build(cfg, data)
        run_dir = _open_run_dir(setup, run_dir, out, resume, writer, held)
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
            if stop():  # a signal during validation: stop here, not a whole epoch later
                raise Interrupted()
            save()
            if on_epoch is not None:
                on_epoch(row)

        hooks = Hooks(on_epoch_end=on_epoch_end, should_stop=stop, progress=progress.start_epoch)
        status, reason = _fit(setup, hooks, progress, save)
        result = _base_result(setup, run_dir, status)
        result.update(started=started)
        if reason and status != "completed":
            result["reason"] = reason
        if writer:
            _save_weights(setup, run_dir, status)
        if status == "completed":
            result["test"] = _evaluate_test(setup)
        result.update(total_seconds=clock(), finished=runs.now())
        if writer:
            runs.write_result(run_dir, result)  # last: its status marks the directory complete
    return result
