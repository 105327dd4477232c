"""FusedStep: optimizer.step() for fused SGD/Adam/AdamW without its per-call Python.

Private: it calls torch's private fused kernels (torch._fused_sgd_, _fused_adam_, _fused_adamw_)
and reads torch.optim's private hook registries. Both are checked once at import (FAST_PATH); where
either is missing (another torch version) every step goes through optimizer.step(), which calls
the same kernels. Tested bit-identical to optimizer.step() on the torch this project pins
(pyproject.toml) in tests/test_optim.py.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.optim.optimizer as _optimizer_module

from .optim import check_state_layout

_KERNELS = ("_fused_sgd_", "_fused_adam_", "_fused_adamw_")
_HOOK_REGISTRIES = ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")
# the fast path needs the kernels and the hook registries it checks before each step
FAST_PATH = all(hasattr(torch, k) for k in _KERNELS) and all(hasattr(_optimizer_module, r) for r in _HOOK_REGISTRIES)


class FusedStep:
    """optimizer.zero_grad() and optimizer.step() for a fused SGD, Adam or AdamW, without their
    per-call Python: the same fused kernel on the same state tensors, so weights and state_dict()
    are bit-identical to optimizer.step() (tested). On an MLP step of ~0.4 ms that Python was a
    fifth of the time (Adam: 66 us per optimizer.step(), 24 us here; benchmarks/README.md).

    The first step (it creates the state) and any step it cannot take go through optimizer.step():
    a parameter without a gradient, several groups or devices, optimizer-step hooks (the
    optimizer's own or global ones), SGD's momentum switched to or from 0, a state replaced by
    optimizer.load_state_dict(). It passes no gradient scale: not for use with a GradScaler.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.fused = any(group.get("fused") for group in optimizer.param_groups)
        self.possible = FAST_PATH and self._kernel_fits()
        self.is_sgd = isinstance(optimizer, torch.optim.SGD)
        decoupled = isinstance(optimizer, torch.optim.AdamW) or optimizer.defaults.get("decoupled_weight_decay")
        self.adam_kernel = getattr(torch, "_fused_adamw_" if decoupled else "_fused_adam_", None)
        self.kernel_args: Optional[tuple] = None  # the state lists, once the state exists
        self.state_seen: Optional[dict] = None  # the optimizer.state those lists came from

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def __call__(self) -> None:
        grads = [p.grad for p in self.params]
        if not self._fast_path_holds(grads):
            if self.fused and self.optimizer.state is not self.state_seen:
                check_state_layout(self.optimizer)  # a state loaded since the last step
            self.optimizer.step()
            self.kernel_args = self._state_lists() if self.possible else None
            self.state_seen = self.optimizer.state
            return
        with torch.no_grad():  # as optimizer.step(): in-place updates of leaf tensors
            self._fused_kernel(grads)

    def _fast_path_holds(self, grads: list[Optional[torch.Tensor]]) -> bool:
        """What can change between steps (the rest is fixed when the lists are made)."""
        opt = self.optimizer
        if self.kernel_args is None or opt.state is not self.state_seen or any(g is None for g in grads) \
                or getattr(opt, "_optimizer_step_pre_hooks", True) or getattr(opt, "_optimizer_step_post_hooks", True) \
                or _optimizer_module._global_optimizer_pre_hooks \
                or _optimizer_module._global_optimizer_post_hooks:
            return False
        if self.is_sgd:  # buffers exist iff momentum is on
            return (opt.param_groups[0]["momentum"] != 0) == bool(self.kernel_args[0])
        return True

    def _fused_kernel(self, grads: list[torch.Tensor]) -> None:
        group = self.optimizer.param_groups[0]
        if self.is_sgd:
            torch._fused_sgd_(self.params, grads, self.kernel_args[0], weight_decay=group["weight_decay"],
                              momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"],
                              nesterov=group["nesterov"], maximize=group["maximize"], is_first_step=False,
                              grad_scale=None, found_inf=None)
            return
        exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, step_counts = self.kernel_args
        step_counts.add_(1)  # every parameter's step count: one op (_foreach_add_ is one per tensor here)
        beta1, beta2 = group["betas"]
        self.adam_kernel(self.params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
                         amsgrad=group["amsgrad"], lr=group["lr"], beta1=beta1, beta2=beta2,
                         weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
                         grad_scale=None, found_inf=None)

    def _kernel_fits(self) -> bool:
        """A fused SGD/Adam/AdamW with one group on one device and dtype, plain float settings."""
        opt, groups = self.optimizer, self.optimizer.param_groups
        return type(opt) in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW) and len(groups) == 1 \
            and bool(groups[0].get("fused")) and not groups[0].get("differentiable") \
            and not groups[0].get("capturable") \
            and not any(isinstance(v, torch.Tensor) for k, v in groups[0].items() if k != "params") \
            and len({(p.device, p.dtype) for p in self.params}) == 1

    def _state_lists(self) -> Optional[tuple]:
        """The kernel's state arguments once optimizer.step() has made the state, else None."""
        opt, groups = self.optimizer, self.optimizer.param_groups
        state = [opt.state.get(p, {}) for p in self.params]
        if self.is_sgd:
            buffers = [s.get("momentum_buffer") for s in state] if groups[0]["momentum"] != 0 else []
            return (buffers,) if all(b is not None for b in buffers) else None
        if not all(state):
            return None
        max_sqs = [s["max_exp_avg_sq"] for s in state] if groups[0]["amsgrad"] else []
        step_counts = torch.stack([s["step"] for s in state])  # the same values, in one tensor
        for s, count in zip(state, step_counts.unbind()):
            s["step"] = count  # a view of it: state_dict() and the kernel read the shared counts
        return ([s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state], max_sqs,
                [s["step"] for s in state], step_counts)
