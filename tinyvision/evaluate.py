"""Evaluation: loss and accuracy of a model on a split, per-class metrics, confusion matrix."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from .data.loader import DeviceLoader
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
    """Test-set metrics beyond loss and accuracy."""

    confusion: list[list[int]]
    precision: list[float]
    recall: list[float]  # = per-class accuracy
    support: list[int]
    most_confused: list[dict] = field(default_factory=list)


def class_report(pred: Predictions, classes: tuple[str, ...], top: int = 5) -> ClassReport:
    k = len(classes)
    cm = confusion_matrix(pred.labels, pred.predicted, k)
    tp = cm.diag().double()
    precision = (tp / cm.sum(dim=0).clamp_min(1)).tolist()
    recall = (tp / cm.sum(dim=1).clamp_min(1)).tolist()
    off = cm.clone()
    off.fill_diagonal_(0)
    pairs = []
    for flat in off.flatten().argsort(descending=True)[:top].tolist():
        true, predicted = divmod(flat, k)
        if off[true, predicted] == 0:
            break
        pairs.append({"true": classes[true], "predicted": classes[predicted],
                      "count": int(off[true, predicted])})
    return ClassReport(cm.tolist(), precision, recall, cm.sum(dim=1).tolist(), pairs)


def split_metrics(pred: Predictions) -> dict[str, float]:
    acc = pred.accuracy
    return {"loss": pred.loss, "accuracy": acc, "error": 1.0 - acc, "seconds": pred.seconds}


def confident_mistakes(probs: torch.Tensor, labels: torch.Tensor, k: int = 16) -> list[int]:
    """Indices of the k wrongly classified images with the highest predicted-class probability."""
    conf, pred = probs.max(dim=1)
    wrong = (pred != labels).nonzero().flatten()
    order = conf[wrong].argsort(descending=True)[:k]
    return wrong[order].tolist()
