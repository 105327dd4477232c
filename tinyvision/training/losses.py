"""The `loss` field: what training minimises, for one run or K runs at once.

    cross_entropy  softmax cross-entropy on the logits, with the config's label_smoothing (default)
    mse            squared error between the softmax outputs and one-hot targets, averaged over the
                   batch and the classes: the "Euclidean loss" of classic assignments
                   (nn.MSELoss()(F.softmax(out, 1), F.one_hot(y).float()))
    nll            negative log-likelihood of outputs that already are log-probabilities (a module
                   ending in log_softmax: nn.NLLLoss)
    in Python, any callable (outputs, targets) -> scalar tensor

Whatever the training loss, the loss columns of metrics.csv and the validation loss that early
stopping watches are the NLL of the softmax of the outputs, so runs with different losses are
measured on one scale (a log_softmax output's softmax is itself: its NLL is nll's loss).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError

LOSSES = ("cross_entropy", "mse", "nll")
PYTHON_PREFIX = "python:"  # config.yaml's `loss` for a callable given in Python


class Loss:
    """One loss kind (or a callable) for K members' outputs [K, B, C] and targets [K, B] or [B]."""

    def __init__(self, kind: str | Callable[..., torch.Tensor], smoothing: Optional[list[float]] = None) -> None:
        self.fn: Optional[Callable[..., torch.Tensor]] = None if isinstance(kind, str) else kind
        self.kind = kind if isinstance(kind, str) else loss_reference(kind)
        if self.fn is None and self.kind not in LOSSES:
            raise ConfigError(f"config field loss: {self.kind!r} is a Python callable's name; pass the callable "
                              "itself in Python (loss=...), or one of " + ", ".join(LOSSES)
                              if self.kind.startswith(PYTHON_PREFIX) else
                              f"config field loss: unknown loss {self.kind!r} (valid: {', '.join(LOSSES)})")
        self.smoothing = smoothing if smoothing and any(smoothing) else None

    @property
    def reports_its_nll(self) -> bool:
        """The training loss is the NLL the metrics report (no second pass needed)."""
        return self.fn is None and self.kind in ("cross_entropy", "nll") and self.smoothing is None

    def one(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One run's loss: out [B, C] (fp32), y [B]."""
        if self.fn is not None:
            return _scalar(self.fn(out, y))
        if self.kind == "cross_entropy":
            return F.cross_entropy(out, y, label_smoothing=self.smoothing[0] if self.smoothing else 0.0)
        if self.kind == "nll":
            return F.nll_loss(out, y)
        return F.mse_loss(out.softmax(dim=1), F.one_hot(y, out.shape[1]).to(out.dtype))

    def members(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(each member's NLL of the softmax, each member's training loss), both [K]; out [K, B, C]
        (fp32), y [K, B] or one [B] for every member."""
        target = y.expand(out.shape[:2]) if y.dim() == 1 else y
        logp = out.log_softmax(dim=-1)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).mean(dim=1)
        if self.fn is not None:
            return nll, torch.stack([_scalar(self.fn(out[k], target[k])) for k in range(len(out))])
        if self.kind == "nll":
            return nll, -out.gather(-1, target.unsqueeze(-1)).squeeze(-1).mean(dim=1)
        if self.kind == "mse":
            one_hot = F.one_hot(target, out.shape[-1]).to(out.dtype)
            return nll, (out.softmax(dim=-1) - one_hot).square().mean(dim=(1, 2))
        if self.smoothing is None:
            return nll, nll
        e = torch.tensor(self.smoothing, dtype=out.dtype, device=out.device)
        return nll, (1.0 - e) * nll + e * -logp.mean(dim=-1).mean(dim=1)  # torch's label smoothing, per member


def _scalar(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ConfigError(f"loss: the callable must return a scalar tensor, returned {shape}")
    return value


def loss_reference(fn: Callable[..., Any]) -> str:
    """How config.yaml names a callable loss: python:<qualified name>."""
    return PYTHON_PREFIX + getattr(fn, "__qualname__", type(fn).__name__)
