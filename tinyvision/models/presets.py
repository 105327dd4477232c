"""Named model presets (one short registered entry each) and create_model / list_models (timm-style)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..registry import Registry
from .build import build_model
from .spec import ModelSpec, parse_spec


@dataclass(frozen=True)
class Preset:
    """A named spec string and the input shape (C, H, W) of the dataset it was designed for."""

    name: str
    spec: str
    input_shape: tuple[int, int, int] = (1, 28, 28)
    description: str = ""

    def __post_init__(self) -> None:
        parse_spec(self.spec)  # a typo in a preset fails at import, not at training time


MODELS: Registry[Preset] = Registry("model")


def _preset(name: str, spec: str, description: str, input_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
    MODELS.add(name, Preset(name, spec, input_shape, description))


_preset("mlp-40-40", "mlp:40-40", "MLP 784-40-40-10, ReLU")
_preset("mlp-300-sigmoid", "mlp:300/sigmoid", "MLP 784-300-10, sigmoid (LeCun et al. 1998 style)")
_preset("mlp-456-128", "mlp:456-128", "MLP 784-456-128-10, ReLU")
_preset("lenet", "cnn:20-50/k5/p0/fc500", "LeNet-style: conv20 k5 valid, pool, conv50 k5 valid, pool, fc500")
_preset("cnn-tiny", "cnn:16-4/k3/same", "conv16, pool, conv4, pool, linear 196->10 (2,710 params)")
_preset("cnn-small", "cnn:8-16/k5/same/fc128", "conv8 k5, pool, conv16 k5, pool, fc128")
_preset("digits-mlp", "mlp:128-64-64-32", "MLP 64-128-64-64-32-10 for 8x8 digits", (1, 8, 8))
_preset("digits-cnn", "cnn:32-64/k3/bn/fc128/drop0.3",
        "conv32-BN, pool, conv64-BN, pool, fc128, dropout 0.3 for 8x8 digits (chosen by examples/tune-main-job.yaml)",
        (1, 8, 8))
_preset("svhn-cnn", "cnn:16-32-64/k3/fc256-64", "conv16-32-64 each pooled, flatten 1024, fc256-64",
        (3, 32, 32))


def resolve_spec(name_or_spec: str | ModelSpec, **overrides: Any) -> ModelSpec:
    """A preset name ("lenet") or a spec string ("cnn:16-32/k3") -> ModelSpec, with fields overridden."""
    if isinstance(name_or_spec, ModelSpec):
        spec = name_or_spec
    elif ":" in name_or_spec:
        spec = parse_spec(name_or_spec)
    else:
        spec = parse_spec(MODELS.get(name_or_spec.strip()).spec)
    return spec.replace(**overrides) if overrides else spec


def create_model(name_or_spec: str | ModelSpec, input_shape: tuple[int, int, int], num_classes: int,
                 **overrides: Any) -> nn.Module:
    """Build a preset or spec string for inputs of shape (C, H, W); overrides are ModelSpec fields."""
    return build_model(resolve_spec(name_or_spec, **overrides), input_shape, num_classes)


def list_models(pattern: str = "*") -> list[str]:
    """Registered preset names matching a shell-style wildcard, sorted."""
    return MODELS.names(pattern)
