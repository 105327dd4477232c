"""Image-like plots: the confusion-matrix heatmap with per-class accuracy, and prediction grids."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from .plots import blank_figure, new_figure

MISTAKE, CORRECT = "tab:red", "black"


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], *,
                   title: str = "Confusion matrix (test set)") -> Figure:
    """Counts as a heatmap (row = true class, column = predicted) beside per-class accuracy bars.

    The image holds the raw counts; a square-root colour scale keeps small off-diagonal counts visible.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    k = len(classes)
    size = min(14.0, 3.0 + 0.55 * k)
    fig, (ax, bars) = new_figure(size + 3.0, size * 0.85, ncols=2, width_ratios=[size, 3.0])
    ax.imshow(cm, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=max(1, int(cm.max()))))
    ax.set_xticks(range(k), classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right"
                  if max(map(len, classes)) > 2 else "center")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if k <= 30:
        threshold = 0.6 * math.sqrt(max(1, cm.max()))
        for (i, j), count in np.ndenumerate(cm):
            color = "white" if math.sqrt(count) > threshold else ("black" if count else "0.75")
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8 if k > 12 else 9, color=color)
    _accuracy_bars(bars, cm, classes)
    return fig


def per_class_accuracy(confusion: Sequence[Sequence[int]]) -> list[float]:
    """Recall of each class: the diagonal over the row sums (0 for a class with no test images)."""
    cm = np.asarray(confusion, dtype=np.float64)
    return (np.diag(cm) / np.maximum(cm.sum(axis=1), 1)).tolist()


def _accuracy_bars(ax, cm: np.ndarray, classes: Sequence[str]) -> None:
    acc = [100 * a for a in per_class_accuracy(cm)]
    ax.barh(range(len(classes)), acc, color="tab:blue", height=0.7)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_ylim(len(classes) - 0.5, -0.5)  # same order as the heatmap rows
    ax.set_xlim(0, 115)
    for i, a in enumerate(acc):
        ax.text(a + 1, i, f"{a:.0f}", va="center", fontsize=8)
    ax.set_xlabel("accuracy (%)")
    ax.set_title("per-class accuracy")
    ax.grid(True, axis="x", alpha=0.3)


def _to_display(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N,C,H,W) raw pixels -> (N,H,W) or (N,H,W,3) floats in [0,1], scaled by the batch's range."""
    x = torch.as_tensor(images).to(torch.float32)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / max(hi - lo, 1e-12)
    return x[:, 0].numpy() if x.shape[1] == 1 else x.permute(0, 2, 3, 1).numpy()


def plot_prediction_grid(images: torch.Tensor | np.ndarray, labels: Sequence[int], predicted: Sequence[int],
                         classes: Sequence[str], *, confidence: Optional[Sequence[float]] = None,
                         cols: int = 8, title: str = "Test predictions",
                         names: Optional[Sequence[str]] = None) -> Figure:
    """One cell per image titled with predicted and true class; mistakes get a red title and border.

    confidence (the predicted class's probability, 0..1) is appended to each title when given;
    names (each image's file name, e.g. from mistakes.csv) are written under the images.
    """
    n = len(labels)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    height = (1.9 if names else 1.65) * rows + 0.5
    fig = blank_figure(1.45 * cols, height, layout=None)  # fixed layout: constrained is slow for many axes
    fig.suptitle(title, y=1 - 0.12 / height)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=(0.3 if names else 0.02) / height, top=1 - 0.85 / height,
                        wspace=0.1, hspace=0.7 if names else 0.45)
    pixels = _to_display(images) if n else []
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.remove()
            continue
        gray = pixels[i].ndim == 2
        ax.imshow(pixels[i], cmap="gray_r" if gray else None, vmin=0, vmax=1, interpolation="nearest")
        true, pred = int(labels[i]), int(predicted[i])
        wrong = true != pred
        sure = f" ({100 * float(confidence[i]):.0f}%)" if confidence is not None else ""
        text = f"pred {classes[pred]}{sure}\ntrue {classes[true]}"
        color = MISTAKE if wrong else CORRECT
        ax.set_title(text, fontsize=8, color=color, fontweight="bold" if wrong else "normal")
        if names and names[i]:
            ax.set_xlabel(short_name(names[i]), fontsize=7)
        for spine in ax.spines.values():
            spine.set_color(color if wrong else "0.8")
            spine.set_linewidth(2.5 if wrong else 0.5)
    return fig


def short_name(name: str, width: int = 18) -> str:
    """A file name cut to fit under a grid cell: its start and its extension kept."""
    if len(name) <= width:
        return name
    suffix = Path(name).suffix if len(Path(name).suffix) < width // 2 else ""
    return name[: width - len(suffix) - 1] + "\u2026" + suffix
