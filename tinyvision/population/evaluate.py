"""Per-member losses and evaluation of a stacked model (logits [K, B, classes])."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..data.loader import DeviceLoader
from ..runtime import autocast
from .stack import StackedNet


def member_losses(logits: torch.Tensor, y: torch.Tensor,
                  smoothing: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(each member's mean NLL over its batch, its training loss), both [K]. logits [K, B, C] in
    fp32; y [K, B], or [B] shared by every member. With label smoothing e (per member) the loss is
    torch's: (1 - e) * NLL + e * mean over classes of -log p."""
    logp = logits.log_softmax(dim=-1)
    target = y.expand(logits.shape[:2]) if y.dim() == 1 else y
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).mean(dim=1)
    if smoothing is None:
        return nll, nll
    uniform = -logp.mean(dim=-1).mean(dim=1)
    return nll, (1.0 - smoothing) * nll + smoothing * uniform


@dataclass
class MemberMetrics:
    """One pass over a split by every member: NLL and accuracy per member, as predict_loader
    computes them for a single run (softmax probabilities, NLL of their log clamped at 1e-12)."""

    loss: list[float]
    accuracy: list[float]
    seconds: float  # each member's share of the pass

    def row(self, k: int, prefix: str) -> dict[str, float]:
        return {f"{prefix}_loss": self.loss[k], f"{prefix}_accuracy": self.accuracy[k],
                f"{prefix}_error": 1.0 - self.accuracy[k], f"{prefix}_seconds": self.seconds}


@torch.inference_mode()
def evaluate_members(net: StackedNet, loader: DeviceLoader, dtype: Optional[torch.dtype]) -> MemberMetrics:
    """Every member on the same (shared) batches of `loader`, in eval mode; each member's NLL is
    summed per batch by F.nll_loss and its accuracy is a float32 mean, as predict_loader computes
    them for a single run (the same numbers, so early stopping decides as the single run would)."""
    was_training = net.training
    net.eval()
    start = time.perf_counter()
    loss_sum = torch.zeros(net.members, dtype=torch.float64, device=loader.device)
    correct = torch.zeros(net.members, dtype=torch.int64, device=loader.device)
    n = 0
    for x, y in loader:
        with autocast(loader.device, dtype):
            logits = net(x).float()
        p = logits.softmax(dim=-1)
        logp = p.clamp_min(1e-12).log()
        for k in range(net.members):
            loss_sum[k] += F.nll_loss(logp[k], y, reduction="sum").double()
        correct += (p.argmax(dim=-1) == y).sum(dim=1)
        n += len(y)
    net.train(was_training)
    accuracy = (correct.float() / max(n, 1)).tolist()  # float32, as Predictions.accuracy
    return MemberMetrics((loss_sum / max(n, 1)).tolist(), accuracy, (time.perf_counter() - start) / net.members)
