"""torch's private fused optimiser kernels (torch._fused_sgd_, _fused_adam_, _fused_adamw_) called
per member on its slice of the stacked parameters: the kernels a single run's optimiser step
calls (tinyvision/_fused.py), so a member's update is bit-identical to its single run's given the
same gradients. Checked once (AVAILABLE); population/step.py falls back to multi-tensor ops where
they are missing (another torch version) or the device has none.
"""
from __future__ import annotations

import torch

_NAMES = ("_fused_sgd_", "_fused_adam_", "_fused_adamw_")
AVAILABLE = all(hasattr(torch, name) for name in _NAMES)
DEVICES = ("cpu", "cuda")  # where torch's optimisers run these kernels


def usable(device: torch.device) -> bool:
    return AVAILABLE and device.type in DEVICES


def adam(kind: str, params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
         exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], group: dict) -> None:
    """One Adam (kind "adam") or AdamW step; `steps` already counts this step, as in torch.optim."""
    kernel = torch._fused_adamw_ if kind == "adamw" else torch._fused_adam_
    beta1, beta2 = group["betas"]
    kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=float(group["lr"]), beta1=float(beta1),
           beta2=float(beta2), weight_decay=float(group["weight_decay"]), eps=float(group["eps"]), amsgrad=False,
           maximize=False, grad_scale=None, found_inf=None)


def sgd(params: list[torch.Tensor], grads: list[torch.Tensor], buffers: list[torch.Tensor], group: dict,
        first: bool) -> None:
    """One SGD step; `buffers` empty without momentum; first: the buffers are set to the gradient."""
    momentum = float(group["momentum"])
    torch._fused_sgd_(params, grads, buffers if momentum else [], weight_decay=float(group["weight_decay"]),
                      momentum=momentum, lr=float(group["lr"]), dampening=float(group["dampening"]),
                      nesterov=bool(group["nesterov"]), maximize=False, is_first_step=first and bool(momentum),
                      grad_scale=None, found_inf=None)
