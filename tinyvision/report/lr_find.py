"""lr-find's curve, drawn from the rows it wrote (lr_find.csv) as the report draws its figures: the
loss of each step and its smoothed loss against the learning rate on a log axis, the suggested
rate (steepest descent) marked and labelled, and the minimum's rate / 10 beside it."""
from __future__ import annotations

import math
from typing import Optional, Sequence

from matplotlib.figure import Figure

from ..errors import TinyVisionError
from .plots import LOSS_LABEL, TEST, TRAIN, VAL, new_figure

SUGGESTED, MIN_LOSS = "suggested_lr", "min_loss_lr"  # the marks' gids (what a test or a restyle finds)


def plot_lr_find(rows: Sequence[dict[str, float]], suggested_lr: Optional[float] = None,
                 min_loss_lr: Optional[float] = None, *, title: str = "Learning-rate range test") -> Figure:
    """rows: lr-find's {lr, loss, smoothed_loss} per step. The y axis spans the losses from the
    lowest to somewhat above where the smoothed one started: the blow-up at the end is cut off."""
    lrs = [float(r["lr"]) for r in rows]
    if not lrs:
        raise TinyVisionError("lr-find: no steps to draw (the loss was not finite from the first step)")
    losses = [float(r["loss"]) for r in rows]
    smoothed = [float(r["smoothed_loss"]) for r in rows]
    fig, (ax,) = new_figure(7, 4)
    ax.plot(lrs, losses, color=TRAIN, alpha=0.3, linewidth=1, label="loss (each step)")
    ax.plot(lrs, smoothed, color=TRAIN, linewidth=2, label="smoothed loss")
    ax.set_xscale("log")
    if suggested_lr is not None:
        y = smoothed[min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i] / suggested_lr)))]
        ax.axvline(suggested_lr, color=VAL, linestyle="--", linewidth=1.2, gid=SUGGESTED)
        ax.plot([suggested_lr], [y], marker="o", markersize=8, color=VAL, linestyle="none",
                label=f"suggested lr {suggested_lr:.2e} (steepest descent)")
        ax.annotate(f"suggested {suggested_lr:.2e}", xy=(suggested_lr, y), xytext=(8, 12),
                    textcoords="offset points", color=VAL, fontweight="bold", gid=SUGGESTED)
    if min_loss_lr is not None:
        ax.axvline(min_loss_lr, color=TEST, linestyle=":", linewidth=1.2, gid=MIN_LOSS,
                   label=f"minimum's lr / 10: {min_loss_lr:.2e}")
    finite = [v for v in smoothed if math.isfinite(v)]
    if finite:
        low, start = min(v for v in finite + losses if math.isfinite(v)), finite[0]
        span = max(start - low, 0.05 * abs(start), 1e-3)
        ax.set_ylim(low - 0.1 * span, max(start, low) + 0.6 * span)
    ax.set_title(title)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(LOSS_LABEL)  # each step's NLL, whatever the training loss (the metrics' scale)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return fig

