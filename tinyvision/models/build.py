"""Build an MLP or CNN classifier (raw logits) from a ModelSpec.

The flattened size comes from shape arithmetic over the layers, never typed by hand; the same
arithmetic counts the parameters first, so a spec too large for this machine is refused before
anything is allocated (check_size).
"""
from __future__ import annotations

import math
import operator
import os
from collections import OrderedDict
from typing import Callable

from torch import nn

from ..errors import ConfigError, SpecError
from .spec import ModelSpec, parse_spec

ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
}
POOL_LAYERS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
# Non-decreasing activations: max(f(a), f(b)) = f(max(a, b)), so a max pool may run first and the
# activation then touches a quarter of the values (same outputs and gradients; LeNet's epoch on
# CPU 9.8 -> 8.3 s, benchmarks/README.md). GELU dips below zero, so it keeps the textbook order.
POOL_COMMUTES = frozenset({"relu", "sigmoid", "tanh"})
MAX_PARAMETERS = 2_000_000_000  # fixed cap: 8 GB of float32 weights (training holds ~4x: grads, Adam)
RAM_SHARE = 0.25  # ... and the weights may take at most this share of the machine's memory


class Classifier(nn.Sequential):
    """An nn.Sequential (named children conv1, act1, ..., head) that remembers how it was built."""

    def __init__(self, layers: OrderedDict[str, nn.Module], spec: str,
                 input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__(layers)
        self.spec = spec  # canonical spec string
        self.input_shape = input_shape  # (C, H, W)
        self.num_classes = num_classes

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, input_shape={self.input_shape}, num_classes={self.num_classes}"


def build_model(spec: ModelSpec | str, input_shape: tuple[int, int, int], num_classes: int) -> Classifier:
    """An MLP or CNN for inputs of shape (C, H, W) giving (B, num_classes) logits.

    Raises SpecError, before allocating anything, for a model over the parameter limit (check_size)."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    shape = _check_input(input_shape, num_classes)
    check_size(spec, shape, num_classes)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if spec.kind == "cnn":
        c, h, w = _add_convs(layers, spec, shape)
        layers["flatten"] = nn.Flatten()
        features = _add_dense(layers, spec, c * h * w, spec.fc, names=("fc{}", None, "fc_act{}", "fc_drop{}"))
    else:
        layers["flatten"] = nn.Flatten()
        features = _add_dense(layers, spec, math.prod(shape), spec.widths,
                              names=("fc{}", "bn{}", "act{}", "drop{}"))
    layers["head"] = nn.Linear(features, num_classes)
    return Classifier(layers, spec.to_string(), shape, num_classes)


def count_spec_parameters(spec: ModelSpec | str, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """The parameters build_model would create (weights, biases, batch-norm scales and shifts),
    by arithmetic on the spec and input shape: nothing is allocated."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    shape = _check_input(input_shape, num_classes)
    total, bn = 0, 2 * spec.batch_norm  # a batch norm has a scale and a shift per channel
    if spec.kind == "cnn":
        k = spec.kernel_size
        plan = _conv_plan(spec, shape)
        for c, width, _ in plan:
            total += c * width * k * k + width + bn * width
        c, h, w = plan[-1][2]
        features, widths, bn = c * h * w, spec.fc, 0  # the dense layers after convs have no batch norm
    else:
        features, widths = math.prod(shape), spec.widths
    for width in widths:
        total += features * width + width + bn * width
        features = width
    return total + features * num_classes + num_classes


def parameter_limit() -> tuple[int, str]:
    """(the most parameters build_model accepts, why): MAX_PARAMETERS, or fewer where RAM_SHARE of
    this machine's physical memory holds fewer float32 weights."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not on this system: the fixed cap alone
        memory = 0
    by_memory = int(RAM_SHARE * memory) // 4
    if 0 < by_memory < MAX_PARAMETERS:
        return by_memory, (f"{RAM_SHARE:.0%} of this machine's {_bytes(memory)} of memory as float32 "
                           f"weights: {by_memory:.1e} parameters")
    return MAX_PARAMETERS, f"{MAX_PARAMETERS:.0e} parameters ({_bytes(4 * MAX_PARAMETERS)} of float32; a fixed cap)"


def check_size(spec: ModelSpec | str, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """The model's parameter count, or SpecError when it is over parameter_limit()."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    params = count_spec_parameters(spec, input_shape, num_classes)
    limit, why = parameter_limit()
    if params > limit:
        shape = "x".join(map(str, input_shape))
        raise SpecError(f"model spec {spec.to_string()[:100]!r} on {shape} input with {num_classes} classes has "
                        f"{params:.1e} parameters ({_bytes(4 * params)} of float32); the limit is {why}")
    return params


def _bytes(n: float) -> str:
    """1.2 GB, 290 TB (decimal units, as in the limit's message)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def _check_input(input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, int, int]:
    try:
        shape = tuple(operator.index(n) for n in input_shape)  # accepts torch.Size, numpy ints
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape must be three positive ints (C, H, W), got {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    return shape  # type: ignore[return-value]


def _conv_plan(spec: ModelSpec, shape: tuple[int, int, int]
               ) -> list[tuple[int, int, tuple[int, int, int]]]:
    """Per conv block: (in channels, out channels, output (C, H, W) after its pool); SpecError
    when a layer would leave nothing."""
    c, h, w = shape
    k = spec.kernel_size
    pad = k // 2 if spec.padding is None else spec.padding
    plan = []
    for i, width in enumerate(spec.widths, 1):
        h, w = _shrink(spec, shape, f"conv{i}", h, w, lambda n: n + 2 * pad - k + 1)
        if spec.pool != "none":
            h, w = _shrink(spec, shape, f"pool{i}", h, w, lambda n: n // spec.pool_size)
        plan.append((c, width, (width, h, w)))
        c = width
    return plan


def _add_convs(layers: OrderedDict[str, nn.Module], spec: ModelSpec,
               shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Append conv[-bn]-act[-pool] blocks (max pool before a monotonic act); return the output (C, H, W)."""
    k = spec.kernel_size
    pad = k // 2 if spec.padding is None else spec.padding
    plan = _conv_plan(spec, shape)
    for i, (c, width, _) in enumerate(plan, 1):
        layers[f"conv{i}"] = nn.Conv2d(c, width, k, padding=pad)
        if spec.batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(width)
        act = _activation(spec.conv_act)
        if spec.pool == "none":
            _add_optional(layers, f"act{i}", act)
        else:
            pool = POOL_LAYERS[spec.pool](spec.pool_size)  # stride = window
            if spec.pool == "max" and spec.conv_act in POOL_COMMUTES:
                layers[f"pool{i}"] = pool
                _add_optional(layers, f"act{i}", act)
            else:
                _add_optional(layers, f"act{i}", act)
                layers[f"pool{i}"] = pool
    return plan[-1][2]


def _activation(name: str) -> nn.Module | None:
    """The activation layer; None for "none" (no layer at all, as in a Sequential written without one)."""
    return None if name == "none" else ACTIVATION_LAYERS[name]()


def _add_optional(layers: OrderedDict[str, nn.Module], name: str, layer: nn.Module | None) -> None:
    if layer is not None:
        layers[name] = layer


def _shrink(spec: ModelSpec, shape: tuple[int, ...], layer: str, h: int, w: int,
            size: Callable[[int], int]) -> tuple[int, int]:
    """New (H, W) after a layer, or SpecError when the layer would leave nothing."""
    new_h, new_w = size(h), size(w)
    if new_h < 1 or new_w < 1:
        raise SpecError(f"model spec {spec.to_string()!r} on {'x'.join(map(str, shape))} input: "
                        f"{layer} output would be {max(new_h, 0)}x{max(new_w, 0)} (its input is {h}x{w})")
    return new_h, new_w


def _add_dense(layers: OrderedDict[str, nn.Module], spec: ModelSpec, features: int,
               widths: tuple[int, ...], names: tuple[str, str | None, str, str]) -> int:
    """Append Linear[-bn]-act[-dropout] per width; return the last width. `names`: fc, bn, act, drop."""
    fc, bn, act, drop = names
    for i, width in enumerate(widths, 1):
        layers[fc.format(i)] = nn.Linear(features, width)
        if spec.batch_norm and bn:
            layers[bn.format(i)] = nn.BatchNorm1d(width)
        _add_optional(layers, act.format(i), _activation(spec.fc_act))
        if spec.dropout:
            layers[drop.format(i)] = nn.Dropout(spec.dropout)
        features = width
    return features
