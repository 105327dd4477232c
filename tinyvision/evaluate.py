"""Evaluation: loss and accuracy of a model on a split; per-class precision, recall and F1,
macro-F1, top-k accuracy, calibration (ECE and the reliability diagram's bins), confusion matrix."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from .data.loader import DeviceLoader
from .errors import ConfigError
from .runtime import autocast, autocast_dtype


@dataclass
class Predictions:
    """Logits-derived outputs of one pass over a split, on the CPU."""

    probs: torch.Tensor  # (N, K) softmax probabilities, float32
    labels: torch.Tensor  # (N,) true labels
    loss: float  # mean NLL
    seconds: float

    @property
    def predicted(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).float().mean()) if len(self.labels) else 0.0


Forward = Callable[[torch.Tensor], torch.Tensor]  # images [B, C, H, W] -> logits [K, B, classes]


@torch.inference_mode()
def predict_members(forward: Forward, loader: DeviceLoader, members: int, *, dtype: Optional[torch.dtype] = None,
                    tta: bool = False, flip: bool = False) -> list[Predictions]:
    """One pass over `loader` by K models at once (a module, or K stacked: `forward` gives each
    one's logits, in eval mode): each one's probabilities, loss (mean NLL of the probabilities,
    clamped at 1e-12) and accuracy; averaged over shifted copies with tta (and the mirror image
    with flip, for data trained with flips: not digits)."""
    start = time.perf_counter()
    probs, labels = [], []
    loss_sum = torch.zeros(members, device=loader.device, dtype=torch.float64)
    for x, y in loader:
        with autocast(loader.device, dtype):
            p = forward(x).float().softmax(dim=-1)
        if tta:
            p = _tta_probs(forward, x, p, loader.device, dtype, _background(loader), flip)
        logp = p.clamp_min(1e-12).log().gather(-1, y.expand(members, -1).unsqueeze(-1))
        loss_sum -= logp.squeeze(-1).sum(dim=1, dtype=torch.float64)
        probs.append(p)
        labels.append(y)
    n = max(1, sum(len(y) for y in labels))
    probs_t = torch.cat(probs, dim=1).cpu() if probs else torch.zeros(members, 0, 0)
    labels_t = torch.cat(labels).cpu() if labels else torch.zeros(0, dtype=torch.long)
    seconds, losses = (time.perf_counter() - start) / members, (loss_sum / n).tolist()
    return [Predictions(probs_t[k], labels_t, losses[k], seconds) for k in range(members)]


def predict_loader(model: nn.Module, loader: DeviceLoader, *, tta: bool = False, flip: bool = False,
                   precision: str = "auto") -> Predictions:
    """One module's pass in eval mode (predict_members of one)."""
    was_training = model.training
    model.eval()
    try:
        return predict_members(lambda x: model(x).unsqueeze(0), loader, 1, tta=tta, flip=flip,
                               dtype=autocast_dtype(precision, loader.device, model))[0]
    finally:
        model.train(was_training)


TTA_SHIFTS = ((0, -1), (0, 1), (-1, 0), (1, 0))  # (dy, dx) one-pixel shifts averaged with the original


def _background(loader: DeviceLoader) -> torch.Tensor:
    """(1,C,1,1) value of a black (raw 0) pixel after normalisation: what a shift lets in."""
    return loader.norm.apply(torch.zeros(1, len(loader.norm.mean), 1, 1, device=loader.device))


def shift_images(x: torch.Tensor, dy: int, dx: int, fill: torch.Tensor) -> torch.Tensor:
    """Translate a (B,C,H,W) batch by (dy, dx) pixels, filling the vacated border with `fill`."""
    out = fill.expand_as(x).clone()
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _tta_probs(forward: Forward, x: torch.Tensor, p: torch.Tensor, device: torch.device,
               dtype: Optional[torch.dtype], fill: torch.Tensor | float = 0.0,
               flip: bool = False) -> torch.Tensor:
    """Average with one-pixel shifts up, down, left and right, and with flip the left-right
    mirror image (only for data trained with flips: digits are not mirror-symmetric); the
    border that a shift uncovers is filled with the background."""
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    views = [shift_images(x, dy, dx, fill) for dy, dx in TTA_SHIFTS] + ([x.flip(-1)] if flip else [])
    total = p.clone()
    for view in views:
        with autocast(device, dtype):
            total += forward(view).float().softmax(dim=-1)
    return total / (1 + len(views))


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


@dataclass
class ClassReport:
    """Test-set metrics beyond loss and accuracy: per class (in the classes' order) and overall."""

    confusion: list[list[int]]
    precision: list[float]
    recall: list[float]  # = per-class accuracy
    f1: list[float]
    support: list[int]
    macro_f1: float  # over the classes found in the labels or the predictions (scikit-learn's "macro")
    most_confused: list[dict] = field(default_factory=list)


def class_report(pred: Predictions, classes: tuple[str, ...], top: int = 5) -> ClassReport:
    """Per-class precision, recall and F1 (0 where a class is never predicted or never true),
    macro-F1, the confusion matrix and its `top` most frequent mistakes. Computed from the
    confusion matrix with scikit-learn's definitions (tests/test_metrics.py holds them against
    sklearn.metrics): importing scikit-learn costs ~2.4 s per process, more than a small run."""
    k = len(classes)
    cm = confusion_matrix(pred.labels, pred.predicted, k).double()
    tp, predicted, true = cm.diag(), cm.sum(dim=0), cm.sum(dim=1)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros(()))
    recall = torch.where(true > 0, tp / true.clamp_min(1), torch.zeros(()))
    denominator = 2 * tp + (predicted - tp) + (true - tp)  # 2 TP + FP + FN
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.zeros(()))
    seen = (predicted + true) > 0  # macro: over the classes in the labels or the predictions
    macro = float(f1[seen].mean()) if bool(seen.any()) else 0.0
    off = cm.long()
    off.fill_diagonal_(0)
    pairs = []
    for flat in off.flatten().argsort(descending=True)[:top].tolist():
        row, column = divmod(flat, k)
        if off[row, column] == 0:
            break
        pairs.append({"true": classes[row], "predicted": classes[column], "count": int(off[row, column])})
    return ClassReport(cm.long().tolist(), precision.tolist(), recall.tolist(), f1.tolist(), true.long().tolist(),
                       macro, pairs)


def split_metrics(pred: Predictions) -> dict[str, float]:
    acc = pred.accuracy
    return {"loss": pred.loss, "accuracy": acc, "error": 1.0 - acc, "seconds": pred.seconds}


def top_k_accuracy(probs: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[int, float]:
    """(k, the share of images whose true class is among the k most probable), as scikit-learn's
    top_k_accuracy_score. A k above the class count is clipped to it (the score is then 1.0); k < 1
    is a ConfigError."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"top_k must be a whole number >= 1, got {k!r}")
    k = min(k, probs.shape[1])
    if not len(labels):
        return k, 0.0
    hits = (probs.topk(k, dim=1).indices == labels.long().unsqueeze(1)).any(dim=1)
    return k, float(hits.double().mean())


@dataclass
class Calibration:
    """How far the predicted class's probability (confidence) is from the accuracy, over `bins`
    equal-width confidence bins: (0, 1/B], (1/B, 2/B], ... (as scikit-learn's calibration_curve).

    ece: expected calibration error, sum over bins of count/N * |accuracy - mean confidence|; the
    per-bin lists are the reliability diagram (None for an empty bin)."""

    ece: float
    count: list[int]
    confidence: list[Optional[float]]
    accuracy: list[Optional[float]]

    @property
    def bins(self) -> int:
        return len(self.count)

    def record(self) -> dict[str, Any]:
        """As result.json's test.calibration stores it (the ECE is test.ece)."""
        return {"bins": self.bins, "count": self.count, "confidence": self.confidence, "accuracy": self.accuracy}


def calibration(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> Calibration:
    """Top-label calibration of (N, K) probabilities: the ECE and the reliability diagram's bins.
    No library offers the per-bin data of a multiclass model in a public API (torchmetrics keeps it
    private); the tests check it against scikit-learn's calibration_curve of the right/wrong flags."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ConfigError(f"calibration_bins must be a whole number >= 1, got {bins!r}")
    if not len(labels):
        return Calibration(0.0, [0] * bins, [None] * bins, [None] * bins)
    conf, predicted = probs.double().max(dim=1)
    conf_np = conf.numpy()
    right = (predicted.long() == labels.long()).double().numpy()
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], conf_np)  # as calibration_curve: right-closed bins
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf_np, minlength=bins)
    right_sum = np.bincount(index, weights=right, minlength=bins)
    ece = float(np.abs(right_sum - conf_sum).sum() / max(len(conf_np), 1))

    def means(sums: np.ndarray) -> list[Optional[float]]:
        return [float(s / n) if n else None for s, n in zip(sums, count)]

    return Calibration(ece, count.tolist(), means(conf_sum), means(right_sum))


def metrics_record(pred: Predictions, classes: tuple[str, ...], *, top_k: int = 5, bins: int = 15) -> dict[str, Any]:
    """Every number of a split's evaluation, as result.json's "test" holds them: loss, accuracy,
    error, seconds, macro_f1, top_k (k, clipped to the classes) and top_k_accuracy, ece and
    calibration (the reliability diagram's bins), per_class (precision, recall, f1, support),
    confusion and most_confused."""
    report = class_report(pred, classes)
    k, top = top_k_accuracy(pred.probs, pred.labels, top_k)
    cal = calibration(pred.probs, pred.labels, bins)
    return {**split_metrics(pred), "macro_f1": report.macro_f1, "top_k": k, "top_k_accuracy": top,
            "ece": cal.ece, "calibration": cal.record(),
            "per_class": {"precision": report.precision, "recall": report.recall, "f1": report.f1,
                          "support": report.support},
            "confusion": report.confusion, "most_confused": report.most_confused}


def confident_mistakes(probs: torch.Tensor, labels: torch.Tensor, k: int = 16) -> list[int]:
    """Indices of the k wrongly classified images with the highest predicted-class probability."""
    conf, pred = probs.max(dim=1)
    wrong = (pred != labels).nonzero().flatten()
    order = conf[wrong].argsort(descending=True)[:k]
    return wrong[order].tolist()
