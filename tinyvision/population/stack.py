"""K same-shape classifiers as one module: every parameter gets a leading member dimension.

Dense layers are one batched matmul over [K, B, features] (torch.baddbmm); convolutions are one
grouped convolution over [B, K*C, H, W] (member k's channels side by side, groups=K); pools,
activations and per-channel batch norm need no change. A batch shared by every member ([B, C, H, W])
makes the first layer one wide matmul (one plain conv with K*out channels). Members never mix, so a
NaN in one member stays in that member. member_state(k) is member k's slice under the single
model's state_dict keys, so it loads into the model tinyvision builds for one run.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.build import Classifier

State = dict[str, torch.Tensor]


def _stacked(tensors: Sequence[torch.Tensor], cat: bool) -> nn.Parameter:
    data = torch.cat(list(tensors)) if cat else torch.stack(list(tensors))
    return nn.Parameter(data.detach().clone())


class _Dense(torch.autograd.Function):
    """K dense layers at once: x [K, B, in] (or one [B, in] for every member), weight [K, out, in],
    bias [K, out] -> [K, B, out]. Written out so that the weight's gradient is computed in the
    weight's own layout (autograd's baddbmm(x, weight^T) gives it transposed, and accumulating it
    costs a copy of every first-layer weight per step)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        if x.dim() == 2:  # shared input: x @ [W_1 | ... | W_K], one wide matmul
            k, out, features = weight.shape
            y = torch.addmm(bias.reshape(k * out), x, weight.reshape(k * out, features).t())
            return y.view(len(x), k, out).transpose(0, 1)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        x, weight = x.to(grad.dtype), weight.to(grad.dtype)  # as autocast ran the forward (bf16)
        k, out, features = weight.shape
        grad_x = grad_weight = None
        if x.dim() == 2:
            flat = grad.transpose(1, 2).reshape(k * out, -1)  # [K*out, B]
            if ctx.needs_input_grad[0]:
                grad_x = flat.t() @ weight.reshape(k * out, features)
            if ctx.needs_input_grad[1]:
                grad_weight = (flat @ x).view(k, out, features)
        else:
            if ctx.needs_input_grad[0]:
                grad_x = torch.bmm(grad, weight)
            if ctx.needs_input_grad[1]:
                grad_weight = torch.bmm(grad.transpose(1, 2), x)
        return grad_x, grad_weight, grad.sum(dim=1) if ctx.needs_input_grad[2] else None


class StackedLinear(nn.Module):
    """K nn.Linear: weight [K, out, in], bias [K, out]; x [K, B, in] or one shared [B, in]."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = _stacked([layer.weight for layer in layers], cat=False)
        self.bias = _stacked([layer.bias for layer in layers], cat=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Dense.apply(x, self.weight, self.bias)

    def grouped(self, x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        """x [G, B, in], block g shared by the next sizes[g] members: one wide matmul per block."""
        out, start = [], 0
        for g, n in enumerate(sizes):
            out.append(_Dense.apply(x[g], self.weight[start:start + n], self.bias[start:start + n]))
            start += n
        return torch.cat(out)

    def member_state(self, k: int) -> State:
        return {"weight": self.weight[k], "bias": self.bias[k]}

    def load_member(self, k: int, state: State) -> None:
        self.weight[k].copy_(state["weight"])
        self.bias[k].copy_(state["bias"])


class StackedConv2d(nn.Module):
    """K nn.Conv2d as one: weight [K*out, C, kh, kw] (member-major); x [B, K*C, H, W] runs with
    groups=K, a shared [B, C, H, W] as one plain convolution with K*out output channels."""

    def __init__(self, convs: Sequence[nn.Conv2d]) -> None:
        super().__init__()
        first = convs[0]
        self.members, self.in_channels, self.out_channels = len(convs), first.in_channels, first.out_channels
        self.padding, self.stride, self.dilation = first.padding, first.stride, first.dilation
        self.weight = _stacked([c.weight for c in convs], cat=True)
        self.bias = _stacked([c.bias for c in convs], cat=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = x.shape[1] // self.in_channels  # 1 (shared input) or K
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, groups)

    def grouped(self, x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        """x [G, B, C, H, W], block g shared by the next sizes[g] members: one plain convolution per
        block, their outputs side by side in the channels -> [B, K*out, H', W']."""
        out, start = [], 0
        for g, n in enumerate(sizes):
            rows = slice(start * self.out_channels, (start + n) * self.out_channels)
            out.append(F.conv2d(x[g], self.weight[rows], self.bias[rows], self.stride, self.padding, self.dilation))
            start += n
        return torch.cat(out, dim=1).contiguous(memory_format=torch.channels_last)

    def member_state(self, k: int) -> State:
        rows = slice(k * self.out_channels, (k + 1) * self.out_channels)
        return {"weight": self.weight[rows], "bias": self.bias[rows]}

    def load_member(self, k: int, state: State) -> None:
        rows = slice(k * self.out_channels, (k + 1) * self.out_channels)
        self.weight[rows].copy_(state["weight"])
        self.bias[rows].copy_(state["bias"])


class StackedBatchNorm(nn.Module):
    """K batch norms as one over K*C channels (statistics stay per member: each channel is one
    member's). A dense one takes [K, B, F] and normalises it as [B, K*F]."""

    def __init__(self, norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> None:
        super().__init__()
        first = norms[0]
        self.members, self.channels, self.dense = len(norms), first.num_features, isinstance(first, nn.BatchNorm1d)
        kind = nn.BatchNorm1d if self.dense else nn.BatchNorm2d
        self.norm = kind(len(norms) * first.num_features, eps=first.eps, momentum=first.momentum)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(self.norm, name).copy_(torch.cat([getattr(n, name) for n in norms]))
            self.norm.num_batches_tracked.copy_(first.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.dense:
            return self.norm(x)
        k, b, f = x.shape
        return self.norm(x.transpose(0, 1).reshape(b, k * f)).view(b, k, f).transpose(0, 1)

    def member_state(self, k: int) -> State:
        rows = slice(k * self.channels, (k + 1) * self.channels)
        state = {name: getattr(self.norm, name)[rows] for name in ("weight", "bias", "running_mean", "running_var")}
        return {**state, "num_batches_tracked": self.norm.num_batches_tracked}

    def load_member(self, k: int, state: State) -> None:
        rows = slice(k * self.channels, (k + 1) * self.channels)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(self.norm, name)[rows].copy_(state[name])


class MemberFlatten(nn.Module):
    """nn.Flatten between layouts: a CNN's [B, K*C, H, W] -> [K, B, C*H*W] (each member's features
    in the single model's order); an MLP's input [K, B, C, H, W] -> [K, B, F], shared [B, C, H, W] -> [B, F]."""

    def __init__(self, members: int, after_conv: bool) -> None:
        super().__init__()
        self.members, self.after_conv = members, after_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.after_conv:
            return x.reshape(len(x), self.members, -1).transpose(0, 1)
        return x.flatten(-3)


STACKABLE = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten, nn.ReLU, nn.Sigmoid, nn.Tanh,
             nn.GELU, nn.MaxPool2d, nn.AvgPool2d)  # no Dropout: its masks come from each run's global RNG


def unstackable(net: nn.Module) -> list[str]:
    """The layers of `net` a population cannot stack (empty: it can)."""
    return [f"{name} ({type(m).__name__})" for name, m in net.named_children() if not isinstance(m, STACKABLE)]


class StackedNet(nn.Module):
    """K members of one architecture (tinyvision Classifiers built from one spec) as one module:
    forward([K, B, C, H, W] or shared [B, C, H, W]) -> logits [K, B, classes]."""

    def __init__(self, nets: Sequence[Classifier]) -> None:
        super().__init__()
        if unstackable(nets[0]):
            raise ValueError(f"cannot stack {', '.join(unstackable(nets[0]))}")
        self.members, self.input_shape = len(nets), tuple(nets[0].input_shape)
        self.convolutional = any(isinstance(m, nn.Conv2d) for m in nets[0].modules())
        self.layers = nn.ModuleDict({name: self._stack(name, [dict(n.named_children())[name] for n in nets])
                                     for name, _ in nets[0].named_children()})

    def _stack(self, name: str, modules: list[nn.Module]) -> nn.Module:
        first = modules[0]
        if isinstance(first, nn.Linear):
            return StackedLinear(modules)  # type: ignore[arg-type]
        if isinstance(first, nn.Conv2d):
            return StackedConv2d(modules)  # type: ignore[arg-type]
        if isinstance(first, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return StackedBatchNorm(modules)  # type: ignore[arg-type]
        if isinstance(first, nn.Flatten):
            return MemberFlatten(len(modules), self.convolutional)
        return first  # activations and pools: elementwise or per channel

    def forward(self, x: torch.Tensor, sizes: Optional[Sequence[int]] = None) -> torch.Tensor:
        """x: [K, B, C, H, W] (a batch per member), [B, C, H, W] (one for all), or with `sizes`
        [G, B, C, H, W] (block g's batch for the next sizes[g] members)."""
        if self.convolutional and x.dim() == 5 and sizes is None:  # -> [B, K*C, H, W], member-major channels
            k, b, c, h, w = x.shape
            x = x.transpose(0, 1).reshape(b, k * c, h, w).contiguous(memory_format=torch.channels_last)
        for layer in self.layers.values():
            if sizes is not None and isinstance(layer, (StackedLinear, StackedConv2d)):
                x, sizes = layer.grouped(x, sizes), None  # the first layer with weights
                continue
            x = layer(x)
        return x

    def member_state(self, k: int) -> State:
        """Member k's weights (views) under the single model's state_dict keys."""
        return {f"{name}.{key}": value for name, layer in self.layers.items() if hasattr(layer, "member_state")
                for key, value in layer.member_state(k).items()}

    def snapshot(self, k: int) -> State:
        """A copy of member k's weights, as a single model's state_dict (contiguous)."""
        return {key: value.detach().clone(memory_format=torch.contiguous_format)
                for key, value in self.member_state(k).items()}

    @torch.no_grad()
    def load_member(self, k: int, state: State) -> None:
        for name, layer in self.layers.items():
            if hasattr(layer, "load_member"):
                prefix = f"{name}."
                layer.load_member(k, {key[len(prefix):]: v for key, v in state.items() if key.startswith(prefix)})
