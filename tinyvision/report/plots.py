"""Line plots from run records: learning curves, sweep curves, final metric per value, comparisons.

Figures are plain matplotlib Figures on an Agg canvas: pyplot is never imported, so no window can
open, no global figure list grows and the caller's own backend is left alone. `figure_png` -> PNG.
"""
from __future__ import annotations

import io
import math
from typing import Any, Optional, Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .. import runs
from ..errors import TinyVisionError
from ..stats import Summary
from .load import PointRecord, get, mean_std, point_stat, point_summary

METRICS = ("accuracy", "error")
LOSS_LABEL = "loss (NLL, nats)"
TRAIN, VAL, TEST = "tab:blue", "tab:orange", "tab:green"


def blank_figure(width: float, height: float, layout: Optional[str] = "constrained") -> Figure:
    """An empty Figure (size in inches) on an Agg canvas."""
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def new_figure(width: float, height: float, ncols: int = 1,
               width_ratios: Optional[Sequence[float]] = None) -> tuple[Figure, list]:
    """A Figure on an Agg canvas with ncols side-by-side axes."""
    fig = blank_figure(width, height)
    return fig, list(fig.subplots(1, ncols, squeeze=False, width_ratios=width_ratios)[0])


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure's memory is released afterwards (it is cleared)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    fig.clear()
    return buf.getvalue()


def compact(count: float) -> str:
    """12345 -> "12.3k", 2.5e6 -> "2.5M"."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= size:
            return f"{count / size:.3g}{suffix}"
    return f"{count:.3g}"


def metric_label(metric: str) -> str:
    if metric not in METRICS:
        raise TinyVisionError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    return f"{metric} (%)"


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def plot_learning_curves(metrics: Sequence[dict[str, float]], result: Optional[dict[str, Any]] = None, *,
                         metric: str = "accuracy", title: str = "Learning curves") -> Figure:
    """Loss and accuracy (or error) per epoch, train and validation; the test result as a dashed
    line labelled with its value; the best (early-stopping) epoch as a dotted vertical line."""
    ylabel = metric_label(metric)
    result = result or {}
    fig, (ax_loss, ax_acc) = new_figure(11, 4, ncols=2)
    epochs = [r["epoch"] for r in metrics]
    marker = "o" if len(epochs) <= 30 else None
    panels = ((ax_loss, "loss", 1.0, LOSS_LABEL, lambda v: f"{v:.3f}"),
              (ax_acc, metric, 100.0, ylabel, lambda v: f"{v:.2f}%"))
    for ax, key, scale, label, fmt in panels:
        ax.plot(epochs, [scale * r[f"train_{key}"] for r in metrics], color=TRAIN, marker=marker,
                markersize=3, label="train")
        ax.plot(epochs, [scale * r[f"val_{key}"] for r in metrics], color=VAL, marker=marker,
                markersize=3, label=validation_name(result))
        test = get(result, f"test.{key}")
        if test is not None:
            ax.axhline(scale * test, color=TEST, linestyle="--", label=f"test {fmt(scale * test)}")
            ax.annotate(fmt(scale * test), (1.0, scale * test), xycoords=("axes fraction", "data"),
                        xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom",
                        color=TEST, fontsize=9)
        best = result.get("best_epoch") or (metrics[-1].get("best_epoch") if metrics else None)
        if best:
            why = "early stop" if result.get("stopped_early") else "lowest val loss"
            ax.axvline(best, color="gray", linestyle=":", label=f"best epoch {int(best)} ({why})")
        _style(ax, f"{'loss' if key == 'loss' else metric} per epoch", "epoch", label)
        ax.legend(fontsize=9)
    if epochs:
        for ax in (ax_loss, ax_acc):
            ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    return fig


def validation_name(result: dict[str, Any]) -> str:
    """What the per-epoch evaluation ran on: "validation", or "test (used as validation)" (val_size=0)."""
    return runs.TEST_AS_VALIDATION if result.get("validation") == runs.TEST_AS_VALIDATION else "validation"


def points_validation_name(points: Sequence[PointRecord]) -> str:
    """validation_name for an experiment's points: test (used as validation) only if every run was."""
    results = [r.result for p in points for r in p.completed]
    names = {validation_name(r) for r in results}
    return names.pop() if len(names) == 1 else "validation"


def _band(ax, xs: Sequence[float], mean: Sequence[float], std: Sequence[float], scale: float, color: Any,
          alpha: float, upper: Optional[float]) -> None:
    """A mean ± 1 std band, kept inside what the quantity can be: a loss is never below 0, an
    accuracy or error in percent never outside 0 to 100 (seeds at 13% and 93% must not draw -20%)."""
    low = [max(0.0, m - scale * s) for m, s in zip(mean, std)]
    high = [m + scale * s if upper is None else min(upper, m + scale * s) for m, s in zip(mean, std)]
    ax.fill_between(xs, low, high, color=color, alpha=alpha, linewidth=0)


def _fit_loss_axis(ax, curves: Sequence[Sequence[float]]) -> None:
    """A log scale for losses that span more than three decades (a diverging run at 3,000 nats
    beside converged ones at 0.05 would flatten every other curve to the floor)."""
    values = [v for curve in curves for v in curve if v > 0 and math.isfinite(v)]
    if values and max(values) / min(values) > 1e3:
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(values) / 3)  # a band clipped at 0 would reach down without end


def _mean_by_step(runs_steps: Sequence[Sequence[dict[str, float]]], key: str
                  ) -> tuple[list[float], list[float], list[float]]:
    """(steps, mean, std) of a steps.csv column over runs; a step counts the runs that logged it."""
    by_step: dict[float, list[float]] = {}
    for rows in runs_steps:
        for row in rows:
            by_step.setdefault(row["step"], []).append(row[key])
    steps = sorted(by_step)
    stats = [mean_std(by_step[s]) for s in steps]
    return steps, [m for m, _ in stats], [s for _, s in stats]


def plot_step_curves(series: Sequence[tuple[str, Sequence[Sequence[dict[str, float]]]]], *,
                     metric: str = "accuracy", title: str = "Training loss and accuracy per step") -> Figure:
    """Training loss and accuracy (or error) every log_every steps (steps.csv), one curve per
    (label, runs) series: one run as a line, several (seeds) as their mean and a ±1 std band:
    the spread over initialisations."""
    fig, (ax_loss, ax_acc) = new_figure(11, 4, ncols=2)
    colors = _colors(len(series), ordered=False)
    losses = []
    for (label, runs_steps), color in zip(series, colors):
        for ax, key, scale, upper in ((ax_loss, "train_loss", 1.0, None), (ax_acc, f"train_{metric}", 100.0, 100.0)):
            steps, mean, std = _mean_by_step(runs_steps, key)
            mean = [scale * m for m in mean]
            n = len(runs_steps)
            ax.plot(steps, mean, color=color, linewidth=1.2, label=label + (f" (n={n})" if n > 1 else ""))
            if n > 1:
                _band(ax, steps, mean, std, scale, color, 0.2, upper)
            if ax is ax_loss:
                losses.append(mean)
    _fit_loss_axis(ax_loss, losses)
    _style(ax_loss, "training loss per step", "step", LOSS_LABEL)
    _style(ax_acc, f"training {metric} per step", "step", metric_label(metric))
    if series:
        ax_acc.legend(fontsize=8, title="mean ± 1 std" if any(len(r) > 1 for _, r in series) else None,
                      loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title)
    return fig


def _mean_curve(point: PointRecord, key: str) -> tuple[list[float], list[float], list[float], int]:
    """(epochs, mean, std) over the point's completed runs; an epoch counts the runs that reached it."""
    by_epoch: dict[float, list[float]] = {}
    for run in point.completed:
        for row in run.metrics:
            by_epoch.setdefault(row["epoch"], []).append(row[key])
    epochs = sorted(by_epoch)
    stats = [mean_std(by_epoch[e]) for e in epochs]
    return epochs, [m for m, _ in stats], [s for _, s in stats], len(point.completed)


def _colors(n: int, ordered: bool) -> list:
    """viridis for an ordered sweep (value -> colour), tab10 for unordered comparisons."""
    cmap = matplotlib.colormaps["viridis" if ordered else "tab10"]
    return [cmap(i / max(1, n - 1) * 0.8) if ordered else cmap(i % 10) for i in range(n)]  # 0.8: no pale yellow


def plot_sweep_curves(points: Sequence[PointRecord], *, metric: str = "accuracy", ordered: bool = True,
                      title: str = "Training and validation per epoch") -> Figure:
    """One curve per point for training and validation; repeats as mean ±1 std band (ddof=1)."""
    ylabel = metric_label(metric)
    fig, axes = new_figure(11, 4.2, ncols=2)
    points = [p for p in points if p.completed]
    for ax, split, name in zip(axes, ("train", "val"), ("training", points_validation_name(points))):
        for point, color in zip(points, _colors(len(points), ordered)):
            epochs, mean, std, n = _mean_curve(point, f"{split}_{metric}")
            mean_pct = [100 * m for m in mean]
            ax.plot(epochs, mean_pct, color=color, label=point.label + (f" (n={n})" if n > 1 else ""))
            if n > 1:
                _band(ax, epochs, mean_pct, std, 100.0, color, 0.2, 100.0)
        _style(ax, f"{name} {metric}", "epoch", ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if points:
        axes[1].legend(fontsize=8, title="mean ± 1 std" if any(len(p.completed) > 1 for p in points) else None)
    fig.suptitle(title)
    return fig


def use_log_axis(axis: str, values: Sequence[Any]) -> bool:
    """Log x for learning rates, and for positive values spanning more than two decades."""
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) != len(values) or not nums:
        return False
    if axis == "lr" or axis.endswith(".lr"):
        return min(nums) > 0
    return min(nums) > 0 and max(nums) / min(nums) > 100


def is_numeric(values: Sequence[Any]) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def sweep_groups(points: Sequence[PointRecord], axis: str,
                 others: Sequence[str] = ()) -> list[tuple[str, list[PointRecord]]]:
    """Points split into series by the values of the other varied fields (a grid), else one series."""
    others = [a for a in others if a != axis]
    groups: dict[str, list[PointRecord]] = {}
    for p in points:
        groups.setdefault(", ".join(f"{a}={p.values.get(a)}" for a in others), []).append(p)
    if len(groups) <= 1 or all(len(g) == 1 for g in groups.values()):  # zipped fields: one series
        return [("", list(points))]
    return list(groups.items())


def plot_sweep_final(points: Sequence[PointRecord], axis: str, *, others: Sequence[str] = (),
                     metric: str = "accuracy", title: Optional[str] = None) -> Figure:
    """Final test and best-validation metric against the swept value (mean ± 1 std, seeds as dots).

    others: the experiment's other varied fields; on a grid each of their settings is its own test series.
    """
    ylabel = metric_label(metric)
    points = [p for p in points if p.completed]
    fig, (ax,) = new_figure(7, 4.2)
    values = [p.values.get(axis) for p in points]
    numeric = is_numeric(values)
    categories = list(dict.fromkeys(map(str, values)))  # first-seen order
    groups = sweep_groups(points, axis, others)
    colors = _colors(len(groups), ordered=False) if len(groups) > 1 else [TEST]
    for (name, group), color in zip(groups, colors):
        series = [(f"test.{metric}", f"test, {name}" if name else "test", color)]
        if len(groups) == 1:
            series.append((f"best_val.{metric}", "best validation", VAL))
        group = sorted(group, key=lambda p: p.values.get(axis)) if numeric else group
        xs = [p.values.get(axis) if numeric else categories.index(str(p.values.get(axis))) for p in group]
        for path, label, c in series:
            _errorbar_with_seeds(ax, xs, group, path, label, c)
    log = use_log_axis(axis, values)
    if log:
        ax.set_xscale("log")
        ax.minorticks_off()
    if numeric and len(set(values)) <= 12:  # label the swept values themselves
        ax.set_xticks(sorted(set(values)), [f"{v:g}" for v in sorted(set(values))])
    elif not numeric:
        ax.set_xticks(range(len(categories)), categories, rotation=20, ha="right")
    _style(ax, title or f"final {metric} vs {axis}", f"{axis} (log scale)" if log else axis, ylabel)
    ax.legend(fontsize=9)
    return fig


def _errorbar_with_seeds(ax, xs: list, points: list[PointRecord], path: str, label: str, color: Any) -> None:
    """Mean ± 1 std per point as an errorbar line; single seeds as faint dots when there are repeats."""
    stats = [point_stat(p, path) for p in points]
    ax.errorbar(xs, [100 * m for m, _, _ in stats], yerr=[100 * s for _, s, _ in stats], color=color,
                marker="o", capsize=3, label=f"{label} (mean ± 1 std)")
    for x, p in zip(xs, points):
        seeds = [100 * v for r in p.completed if (v := get(r.result, path)) is not None]
        if len(seeds) > 1:
            ax.scatter([x] * len(seeds), seeds, color=color, s=10, alpha=0.5)


MIN_SPAN = 5.0  # percentage points: a comparison's y axis never shows less (no 0.4-point zoom)


def plot_comparison(points: Sequence[PointRecord], *, metric: str = "accuracy",
                    title: str = "Test result vs model size") -> Figure:
    """Test metric against parameter count (log x): one dot per point at its mean over seeds with its
    95% confidence interval as a bar (stats.summarize's bounded interval for proportions: Student t
    on the logit scale, so asymmetric and never outside 0 to 100%; none for a single seed), seeds as
    faint dots. The y axis spans at least MIN_SPAN points and says where it starts when that is not 0."""
    ylabel = metric_label(metric)
    points = [p for p in points if p.completed]
    fig, (ax,) = new_figure(8.5, 4.5)
    for point, color in zip(points, _colors(len(points), ordered=False)):
        params, _, _ = point_stat(point, "params")
        summary = point_summary(point, f"test.{metric}", "proportion")
        if math.isnan(params) or math.isnan(summary.mean):
            continue
        ax.errorbar([params], [100 * summary.mean], yerr=interval_bars(summary), color=color, marker="o", capsize=4,
                    label=point.name)
        seeds = [100 * v for v in _seed_values(point, f"test.{metric}")]
        if len(seeds) > 1:
            ax.scatter([params] * len(seeds), seeds, color=color, s=10, alpha=0.4)
        ax.annotate(point.name, (params, 100 * summary.mean), xytext=(6, 6), textcoords="offset points",
                    fontsize=8, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: compact(v) if str(round(v))[0] in "235" else ""))
    _style(ax, title, "parameters (count, log scale)", f"test {ylabel}")
    ax.margins(x=0.15, y=0.15)
    _keep_span(ax, MIN_SPAN)
    if points:  # outside the axes: never over a label or an error bar
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  title="mean, 95% CI" if any(len(p.completed) > 1 for p in points) else None)
    return fig


def interval_bars(summary: Summary, scale: float = 100.0) -> Optional[list[list[float]]]:
    """errorbar's yerr for a summary's confidence interval, [[mean - low], [high - mean]] (times
    scale): asymmetric where the interval is (bounded ones); None without an interval (one seed)."""
    if math.isnan(summary.ci_low) or math.isnan(summary.ci_high):
        return None
    return [[scale * (summary.mean - summary.ci_low)], [scale * (summary.ci_high - summary.mean)]]


def _seed_values(point: PointRecord, path: str) -> list[float]:
    return [v for r in point.completed if (v := get(r.result, path)) is not None]


def _keep_span(ax, span: float) -> None:
    """Widen the y axis to at least `span` around its centre (within 0..100) and, where it does not
    start at 0, say so in the plot: a small difference must not look like a large one."""
    low, high = ax.get_ylim()
    if high - low < span:
        centre = (low + high) / 2
        low, high = max(0.0, centre - span / 2), min(100.0, centre + span / 2)
        low, high = (high - span, high) if high == 100.0 else (low, low + span)
        ax.set_ylim(low, high)
    if low > 0:
        ax.text(0.01, 0.01, f"y axis starts at {low:.1f}%, not 0", transform=ax.transAxes, fontsize=8,
                color="gray", ha="left", va="bottom")


def plot_comparison_curves(points: Sequence[PointRecord], *, metric: str = "accuracy",
                           title: str = "Learning curves per model (mean ± 1 std over seeds)") -> Figure:
    """Per model: loss and accuracy (or error) per epoch, validation solid and train dotted, each a
    mean ± 1 std band over seeds; the mean test result as a dashed line in the model's colour."""
    ylabel = metric_label(metric)
    points = [p for p in points if p.completed]
    watched = points_validation_name(points)
    fig, (ax_loss, ax_acc) = new_figure(11, 4.4, ncols=2)
    losses = []
    for point, color in zip(points, _colors(len(points), ordered=False)):
        for ax, key, scale, upper in ((ax_loss, "loss", 1.0, None), (ax_acc, metric, 100.0, 100.0)):
            for split, style in (("val", "-"), ("train", ":")):
                epochs, mean, std, n = _mean_curve(point, f"{split}_{key}")
                mean = [scale * m for m in mean]
                ax.plot(epochs, mean, color=color, linestyle=style,
                        label=f"{point.name} {watched if split == 'val' else 'train'}")
                if n > 1:
                    _band(ax, epochs, mean, std, scale, color, 0.15, upper)
                if ax is ax_loss:
                    losses.append(mean)
            test = point_summary(point, f"test.{key}", "nonnegative" if key == "loss" else "proportion")
            if not math.isnan(test.mean):
                ax.axhline(scale * test.mean, color=color, linestyle="--", linewidth=1.2,
                           label=f"{point.name} test {scale * test.mean:.{2 if scale > 1 else 3}f}")
    _fit_loss_axis(ax_loss, losses)
    _style(ax_loss, "loss per epoch", "epoch", LOSS_LABEL)
    _style(ax_acc, f"{metric} per epoch", "epoch", ylabel)
    for ax in (ax_loss, ax_acc):
        ax.xaxis.get_major_locator().set_params(integer=True)
    if points:
        ax_acc.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title)
    return fig
