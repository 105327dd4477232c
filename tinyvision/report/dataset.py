"""A look at a dataset: class counts per split, per-channel pixel statistics, and a figure (a
labelled grid of training images above per-channel pixel histograms).

These functions read the arrays of a dataset already loaded (any tinyvision.data.ImageDataset:
registered, folder:PATH or npz:PATH); they never load one (report/ reads what it is handed).
Loading is the caller's: tinyvision.dataview.show in a notebook, `tinyvision show` on the command
line. A run keeps the grid's images in predictions.safetensors (runs.grid_rows), and its report
draws them with plot_labelled_grid; a DATA_GRID file in a run directory is shown as it is.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ..files import atomic_write
from ..runs import GRID_IMAGES, grid_rows  # noqa: F401 - grid_rows: this module's public name too
from ..tables import label, num, plain, to_text
from .document import Table
from .grids import _to_display, short_name
from .plots import blank_figure, compact, figure_png

DATA_GRID = "data-grid.png"  # the figure in a run directory (report.build shows it when present)
GRID_COLS = 8
SPLITS = ("train", "val", "test")
_CHANNEL_NAMES = {1: ("gray",), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}
_CHANNEL_COLORS = {"gray": "0.3", "R": "tab:red", "G": "tab:green", "B": "tab:blue", "A": "0.6"}
_CHUNK = 1 << 22  # values per channel statistics pass: float64 copies stay ~32 MB (svhn+extra: 1.7e9)
_FLOAT_BINS = 64  # histogram bins for float images (uint8 ones get one bin per value)


class _Split(Protocol):
    @property
    def images(self) -> torch.Tensor: ...  # (N,C,H,W) uint8 or float32

    @property
    def labels(self) -> torch.Tensor: ...  # (N,) int64

    def __len__(self) -> int: ...


class LoadedDataset(Protocol):
    """What these functions read of a tinyvision.data.ImageDataset."""

    @property
    def name(self) -> str: ...

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def train(self) -> _Split: ...

    @property
    def val(self) -> _Split: ...

    @property
    def test(self) -> _Split: ...

    @property
    def pixel_max(self) -> float: ...


def channel_names(channels: int) -> tuple[str, ...]:
    """("gray",), ("R", "G", "B"), ("R", "G", "B", "A"), else "0", "1", ..."""
    return _CHANNEL_NAMES.get(channels, tuple(str(c) for c in range(channels)))


def describe(data: LoadedDataset) -> dict[str, Any]:
    """Class counts per split and per-channel min, max, mean and std (sample std, as the `dataset`
    normalisation computes it) of the training split, in stored pixel units (Digits: 0..16).

    Returns {"name", "input_shape": [C, H, W], "pixel_max", "classes": [...], "sizes": {split: N},
    "counts": {split: {class: N}}, "channels": [{"channel", "min", "max", "mean", "std"}, ...]}."""
    counts = {}
    for split in SPLITS:
        per_class = torch.bincount(getattr(data, split).labels, minlength=len(data.classes)).tolist()
        counts[split] = dict(zip(data.classes, per_class))
    images = data.train.images
    stats = _channel_stats(images)
    names = channel_names(images.shape[1])
    return {"name": data.name, "input_shape": list(images.shape[1:]), "pixel_max": float(data.pixel_max),
            "classes": list(data.classes), "sizes": {s: len(getattr(data, s)) for s in SPLITS},
            "counts": counts, "channels": [{"channel": n, **s} for n, s in zip(names, stats)]}


def _chunks(images: torch.Tensor) -> Sequence[torch.Tensor]:
    rows = max(1, _CHUNK // max(1, math.prod(images.shape[2:])))
    return images.split(rows)


def _channel_stats(images: torch.Tensor) -> list[dict[str, float]]:
    """Per channel: min, max, mean and std over (N, H, W), in float64, a chunk of rows at a time
    (two passes: the mean, then squared deviations from it, as torch.std does)."""
    c = images.shape[1]
    n = images.numel() // max(c, 1)
    if n == 0:
        return [dict.fromkeys(("min", "max", "mean", "std"), math.nan) for _ in range(c)]
    total = torch.zeros(c, dtype=torch.float64)
    low = torch.full((c,), math.inf, dtype=torch.float64)
    high = torch.full((c,), -math.inf, dtype=torch.float64)
    for chunk in _chunks(images):
        x = chunk.to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        low = torch.minimum(low, x.amin(dim=(0, 2, 3)))
        high = torch.maximum(high, x.amax(dim=(0, 2, 3)))
    mean = total / n
    squares = torch.zeros(c, dtype=torch.float64)
    for chunk in _chunks(images):
        squares += (chunk.to(torch.float64) - mean[None, :, None, None]).square().sum(dim=(0, 2, 3))
    std = (squares / (n - 1)).sqrt() if n > 1 else torch.zeros(c, dtype=torch.float64)
    return [{"min": lo, "max": hi, "mean": m, "std": s}
            for lo, hi, m, s in zip(low.tolist(), high.tolist(), mean.tolist(), std.tolist())]


def description_tables(desc: dict[str, Any]) -> tuple[Table, Table]:
    """describe()'s dict as two tables: images per class and split (with a total row), and the
    training split's per-channel statistics."""
    rows = [{"class": cls, **{s: desc["counts"][s][cls] for s in SPLITS}} for cls in desc["classes"]]
    rows.append({"class": "total", **{s: desc["sizes"][s] for s in SPLITS}})
    counts = Table([("class", "class", label), *[(s, s, num) for s in SPLITS]], rows, "Images per class and split")
    columns = [("channel", "channel", label), ("min", "min", _value), ("max", "max", _value),
               ("mean", "mean", num), ("std", "std", num)]
    units = f"Training split, stored pixel values (white = {desc['pixel_max']:g})"
    return counts, Table(columns, desc["channels"], units)


def format_description(desc: dict[str, Any]) -> str:
    """describe()'s dict as terminal text: a headline, then description_tables."""
    c, h, w = desc["input_shape"]
    sizes = " / ".join(f"{s} {desc['sizes'][s]:,}" for s in SPLITS)
    lines = [f"{desc['name']}: {len(desc['classes'])} classes, input {c}x{h}x{w}, {sizes} images"]
    for table in description_tables(desc):
        lines += ["", table.caption + ":", to_text(table.rows, table.columns)]
    return "\n".join(lines)


def _value(v: Any) -> str:
    """A pixel value: 16 for a whole number (uint8 images), else 4 decimals."""
    return plain(int(v)) if isinstance(v, float) and v.is_integer() else num(v)


def plot_dataset(data: LoadedDataset, *, n: int = GRID_IMAGES) -> Figure:
    """Up to n training images, a few per class, each titled with its class, above the training
    split's pixel histogram per channel (stored values; log scale: dark backgrounds dominate)."""
    rows_idx = grid_rows(data.train.labels, len(data.classes), n)
    c, h, w = data.train.images.shape[1:]
    title = f"{data.name}: {len(rows_idx)} of {len(data.train):,} training images ({c}x{h}x{w})"
    fig, hist = _grid_figure(data.train.images[rows_idx], data.train.labels[rows_idx], data.classes, title,
                             hist_height=2.6)
    _histogram_axes(hist, data.train.images, data.pixel_max)
    return fig


def plot_labelled_grid(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], *,
                       title: str = "Training images") -> Figure:
    """Images (N, C, H, W, raw pixels) in rows of GRID_COLS, each titled with its class: the grid
    a run keeps in predictions.safetensors (runs.grid_rows of its training split)."""
    return _grid_figure(images, labels, classes, title)[0]


def _grid_figure(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], title: str,
                 hist_height: float = 0.0) -> tuple[Figure, Any]:
    """The labelled cells, and with hist_height (inches) an empty axes below them for a histogram."""
    cols = max(1, min(GRID_COLS, len(labels)))
    rows = max(1, -(-len(labels) // cols))
    cell = 1.2
    height = cell * rows + hist_height + (0.9 if hist_height else 0.7)
    fig = blank_figure(cell * cols + 0.4, height, layout=None)  # fixed layout: constrained is slow for many axes
    fig.suptitle(title, y=1 - 0.12 / height)
    ratios = [cell] * rows + ([hist_height] if hist_height else [])
    grid = fig.add_gridspec(len(ratios), cols, height_ratios=ratios, left=0.08 if hist_height else 0.02,
                            right=0.97 if hist_height else 0.98, bottom=(0.45 if hist_height else 0.05) / height,
                            top=1 - 0.55 / height, hspace=0.45, wspace=0.1)
    pixels = _to_display(images) if len(labels) else []
    for i, label_ in enumerate(labels):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        gray = pixels[i].ndim == 2
        ax.imshow(pixels[i], cmap="gray_r" if gray else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(short_name(classes[int(label_)], 14), fontsize=8)
        for spine in ax.spines.values():
            spine.set_color("0.8")
            spine.set_linewidth(0.5)
    return fig, (fig.add_subplot(grid[rows, :]) if hist_height else None)


def _histogram_axes(ax: Any, images: torch.Tensor, pixel_max: float) -> None:
    edges, counts = pixel_histograms(images)
    names = channel_names(images.shape[1])
    for name, row in zip(names, counts):
        ax.stairs(row, edges, color=_CHANNEL_COLORS.get(name), label=name, linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel(f"pixel value (as stored; white = {pixel_max:g})")
    ax.set_ylabel("pixels (log scale)")
    ax.set_title(f"Training split: pixel values per channel ({compact(float(counts.sum()))} values)", fontsize=10)
    ax.grid(True, alpha=0.3)
    if len(names) > 1:
        ax.legend(fontsize=8)


def pixel_histograms(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(bin edges, counts (C, bins)) over (N, H, W) of each channel: one bin per value for uint8
    images (0 to the largest value present), else 64 equal bins from the smallest to the largest."""
    c = images.shape[1]
    if images.numel() == 0:
        return np.array([0.0, 1.0]), np.zeros((c, 1), dtype=np.int64)
    if images.dtype == torch.uint8:
        bins = int(images.max()) + 1
        counts = torch.zeros(c, bins, dtype=torch.int64)
        for chunk in _chunks(images):
            counts += torch.stack([torch.bincount(chunk[:, k].reshape(-1), minlength=bins) for k in range(c)])
        return np.arange(bins + 1) - 0.5, counts.numpy()
    lo, hi = float(images.min()), float(images.max())
    hi = hi if hi > lo else lo + 1.0
    counts = torch.zeros(c, _FLOAT_BINS, dtype=torch.float64)
    for chunk in _chunks(images):
        counts += torch.stack([torch.histc(chunk[:, k].to(torch.float64), _FLOAT_BINS, lo, hi) for k in range(c)])
    return np.linspace(lo, hi, _FLOAT_BINS + 1), counts.round().to(torch.int64).numpy()


def write_data_grid(data: LoadedDataset, path: str | Path) -> Path:
    """plot_dataset's figure as a PNG at `path`, written atomically (a reader never sees half of one)."""
    path = Path(path)
    atomic_write(path, figure_png(plot_dataset(data)))
    return path
