"""The reliability diagram: accuracy against confidence over equal-width bins, and how many test
images fall in each bin, from result.json's test.calibration (or a run's stored probabilities).

Confidence is the probability the model gives its predicted class; a calibrated model is right
that often (its bars touch the diagonal). ECE: the image-weighted mean gap (evaluate.calibration).
"""
from __future__ import annotations

from typing import Any, Optional

from matplotlib.figure import Figure

from ..evaluate import calibration
from ..runs import TestPredictions
from .plots import blank_figure

ACCURACY, GAP, CONFIDENCE = "tab:blue", "tab:red", "black"


def reliability_data(result: dict[str, Any], pred: Optional[TestPredictions] = None,
                     bins: int = 15) -> Optional[dict[str, Any]]:
    """{"ece", "bins", "count", "confidence", "accuracy"}: result.json's test.calibration, or, for a
    run written before it was kept, computed from its stored test probabilities (`pred`) with
    `bins` bins; None when neither is there."""
    test = result.get("test") or {}
    if isinstance(test.get("calibration"), dict) and test.get("ece") is not None:
        return {"ece": test["ece"], **test["calibration"]}
    if pred is None or not len(pred.labels):
        return None
    cal = calibration(pred.probs, pred.labels, bins)
    return {"ece": cal.ece, **cal.record()}


def plot_reliability(data: dict[str, Any], *, title: str = "Reliability diagram (test set)") -> Figure:
    """Above: per confidence bin, the accuracy (bars), its gap to the bin's mean confidence (red)
    and the diagonal of perfect calibration; below: test images per bin (log scale). Percent."""
    bins, count = int(data["bins"]), data["count"]
    width = 100.0 / bins
    centres = [width * (b + 0.5) for b in range(bins)]
    full = [b for b in range(bins) if count[b]]  # empty bins have no accuracy
    acc = [100 * data["accuracy"][b] for b in full]
    conf = [100 * data["confidence"][b] for b in full]
    fig = blank_figure(6.5, 6.2)
    ax, hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.2])
    ax.plot([0, 100], [0, 100], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    ax.bar([centres[b] for b in full], acc, width=width, color=ACCURACY, edgecolor="white", alpha=0.85,
           label="accuracy")
    ax.bar([centres[b] for b in full], [abs(c - a) for a, c in zip(acc, conf)], bottom=[min(a, c) for a, c in
           zip(acc, conf)], width=width, color=GAP, alpha=0.3, hatch="//", edgecolor=GAP, linewidth=0,
           label="gap to mean confidence")
    ax.scatter([centres[b] for b in full], conf, color=CONFIDENCE, marker="_", s=120, zorder=3,
               label="mean confidence")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.text(0.98, 0.03, f"ECE {100 * data['ece']:.2f}% ({bins} bins)", transform=ax.transAxes, ha="right",
            va="bottom", fontsize=10, bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.8"))
    hist.bar([centres[b] for b in full], [count[b] for b in full], width=width, color="0.5", edgecolor="white")
    if full:
        hist.set_yscale("log")
    hist.set_xlabel("confidence (%): the probability of the predicted class")
    hist.set_ylabel("images (log)")
    hist.grid(True, alpha=0.3)
    return fig
