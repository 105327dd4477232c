"""Learning-rate finder: raise the rate exponentially over a few hundred steps until the loss
diverges; suggest the rate where the smoothed loss falls fastest (Smith 2017, fastai's 'steep')."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..errors import ConfigError
from ..files import atomic_write
from ..tables import to_csv


def _batches(loader):
    """Batches forever, epoch after epoch."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def lr_find(cfg: RunConfig, *, min_lr: float = 1e-7, max_lr: float = 10.0, steps: int = 200,
            diverge: float = 4.0, beta: float = 0.98, model: Any = None, loss: Any = None) -> dict[str, Any]:
    """Returns {"rows": [{step, lr, loss, smoothed_loss}], "suggested_lr", "min_loss_lr", "stopped"}.
    Each step is a training step of the run (its loss, optimiser and precision); model and loss as
    pipeline.train_runs takes them."""
    from ..pipeline import prepare  # experiments sit above the pipeline

    if not 0 < min_lr < max_lr < math.inf:  # NaN fails too
        raise ConfigError(f"lr-find needs 0 < min_lr < max_lr, got min_lr {min_lr:g} and max_lr {max_lr:g} "
                          "(--min-lr, --max-lr)")
    trainee, _ = prepare([cfg.model_copy(update={"schedule": "none", "lr": min_lr})], model, loss)
    groups = trainee.optimizer.param_groups
    rows, avg, best, stopped = [], 0.0, math.inf, "max_lr"
    trainee.model.train()
    for step, (x, y) in zip(range(steps), _batches(trainee.loader)):
        lr = min_lr * (max_lr / min_lr) ** (step / max(1, steps - 1))
        for group in groups:
            group["lr"] = lr
        nll, _, _ = trainee.train_step(x, y, [True])
        value = float(nll.detach())  # one sync per step is fine here: a few hundred steps in all
        if not math.isfinite(value):
            stopped = "nan"
            break
        avg = beta * avg + (1 - beta) * value
        smoothed = avg / (1 - beta ** (step + 1))
        rows.append({"step": step, "lr": lr, "loss": value, "smoothed_loss": smoothed})
        best, start = min(best, smoothed), rows[0]["smoothed_loss"]
        # diverged: far above the best, or back above the starting loss after a real descent
        if step > 10 and (smoothed > diverge * best or (best < 0.8 * start and smoothed > start)):
            stopped = "diverged"
            break
    return {"rows": rows, "stopped": stopped, **suggest(rows)}


def suggest(rows: list[dict[str, float]]) -> dict[str, float | None]:
    """Steepest descent of the smoothed loss against log lr; also the minimum's lr / 10."""
    if len(rows) < 5:
        return {"suggested_lr": None, "min_loss_lr": None}
    lrs = torch.tensor([r["lr"] for r in rows]).log10()
    loss = torch.tensor([r["smoothed_loss"] for r in rows])
    low = int(loss.argmin())
    slopes = (loss[1:] - loss[:-1]) / (lrs[1:] - lrs[:-1])
    steep = int(slopes[: max(1, low)].argmin())  # before the minimum: after it the loss is rising
    return {"suggested_lr": rows[steep]["lr"], "min_loss_lr": rows[low]["lr"] / 10}


CSV, SUMMARY, PLOT = "lr_find.csv", "lr_find.json", "lr_find.png"


def write_lr_find(out_dir: str | Path, found: dict[str, Any], cfg: RunConfig) -> Path:
    """lr_find.csv (the rows), lr_find.json (the suggestion, how it stopped, the config) and
    lr_find.png (the curve with the suggestion marked: report.lr_find) in out_dir."""
    from ..report.lr_find import plot_lr_find
    from ..report.plots import figure_png
    from ..runs import make_dirs

    out_dir = make_dirs(out_dir)
    atomic_write(out_dir / CSV, to_csv(found["rows"]))
    summary = {k: v for k, v in found.items() if k != "rows"}
    atomic_write(out_dir / SUMMARY, json.dumps({**summary, "config": cfg.model_dump()}, indent=2))
    if found["rows"]:
        title = f"lr-find: {cfg.model} on {cfg.dataset} ({cfg.optimizer}, batch {cfg.batch_size})"
        figure = plot_lr_find(found["rows"], found["suggested_lr"], found["min_loss_lr"], title=title)
        atomic_write(out_dir / PLOT, figure_png(figure))
    return out_dir
