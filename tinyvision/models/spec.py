"""Model specs: parse strings like "cnn:16-32/k3/fc128" into a validated, frozen ModelSpec and back.

Grammar: `<kind>:<widths>[/<option>]...`, widths '-'-separated, options in any order (see OPTIONS).

Padding, and how it composes with a kernel size given elsewhere (the `kernel_size` config field,
an experiment's kernel_size axis, `ModelSpec.replace(kernel_size=...)`):
- no padding option, or `same` (padding None): "same" padding follows the kernel, k // 2 for the
  kernel the spec ends up with, so an override keeps the feature maps' size (odd kernels only:
  an even one is refused, naming the fix: an explicit p<int> or valid);
- `valid` or `p0`: no padding, with any kernel;
- `p<N>`: exactly N pixels, with any kernel: an explicit padding stays as given and is never
  recomputed, so "cnn:8-16/k5/p2" with kernel_size=3 is k3/p2 (maps grow by 2 pixels a conv), not
  "same". For padding that follows a kernel override, give `same` or no padding.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import SpecError
from ..yamlfile import clip

KINDS = ("mlp", "cnn")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu", "none")  # none: no nonlinearity (a linear map)
ACTIVATION_TOKENS = ("relu", "sigmoid", "tanh", "gelu")  # options that set every activation
POOLS = ("max", "avg", "none")
OPTIONS = ("k<int>", "p<int>", "same", "valid", "max", "avg", "nopool", "pool<int>",
           "fc<int>-<int>...", "relu", "sigmoid", "tanh", "gelu", "act:<activation>", "conv-act:<activation>",
           "fc-act:<activation>", "bn", "drop<float>")
EXAMPLE = "e.g. 'mlp:128-64', 'mlp:linear' or 'cnn:16-32/k3/fc128'"
CNN_ONLY = ("fc", "kernel_size", "padding", "pool", "pool_size", "conv_activation")
_LABELS = {"widths": "width", "fc": "fc width", "kernel_size": "kernel size",
           "pool_size": "pool size", "batch_norm": "batch norm", "conv_activation": "conv activation",
           "fc_activation": "fc activation"}
_FLOAT = re.compile(r"(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class _Invalid(Exception):
    """A bad value; the caller says where it came from (a spec token or a ModelSpec field)."""


@dataclass(frozen=True)
class ModelSpec:
    """What to build: an MLP (widths = hidden sizes) or a CNN (widths = conv channels, fc = dense)."""

    kind: str
    widths: tuple[int, ...]
    fc: tuple[int, ...] = ()
    kernel_size: int = 3
    padding: int | None = None  # None = "same" (k // 2, odd kernels only); 0 = "valid"
    pool: str = "max"  # "max" | "avg" | "none", after every conv
    pool_size: int = 2  # pooling window and stride
    activation: str = "relu"  # after every conv and hidden dense layer, unless one below says otherwise
    dropout: float = 0.0  # after each hidden dense layer
    batch_norm: bool = False
    conv_activation: str | None = None  # after the convolutions; None = activation
    fc_activation: str | None = None  # after the hidden dense layers; None = activation

    @property
    def conv_act(self) -> str:
        """The activation after each convolution ("none": no layer)."""
        return self.conv_activation or self.activation

    @property
    def fc_act(self) -> str:
        """The activation after each hidden dense layer ("none": no layer)."""
        return self.fc_activation or self.activation

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                object.__setattr__(self, f.name, _CHECKS[f.name](value))
            except _Invalid as e:
                raise SpecError(f"ModelSpec field {f.name!r} = {clip(value, 80)}: {e}") from None
        if self.kind == "mlp" and self.fc_activation is not None:  # an MLP is all dense: one spelling
            object.__setattr__(self, "activation", self.fc_activation)
        for name in ("conv_activation", "fc_activation"):  # the same as activation: nothing to say
            if getattr(self, name) == self.activation:
                object.__setattr__(self, name, None)
        problem = _combination_problem(self)
        if problem:
            raise SpecError(f"ModelSpec field {problem[0]!r}: {problem[1]}")

    def to_string(self) -> str:
        """The canonical spec string; `parse_spec(s.to_string()) == s`."""
        parts = [f"{self.kind}:{_join(self.widths) or 'linear'}"]
        if self.kind == "cnn":
            parts.append(f"k{self.kernel_size}")
            if self.padding is not None:
                parts.append(f"p{self.padding}")
            if self.pool != "max":
                parts.append("nopool" if self.pool == "none" else self.pool)
            if self.pool_size != 2:
                parts.append(f"pool{self.pool_size}")
            if self.fc:
                parts.append(f"fc{_join(self.fc)}")
        if self.activation != "relu":
            parts.append(self.activation if self.activation in ACTIVATION_TOKENS else f"act:{self.activation}")
        for name, prefix in (("conv_activation", "conv-act:"), ("fc_activation", "fc-act:")):
            if getattr(self, name) is not None:
                parts.append(prefix + getattr(self, name))
        if self.batch_norm:
            parts.append("bn")
        if self.dropout:
            parts.append(f"drop{self.dropout!r}")
        return "/".join(parts)

    __str__ = to_string

    def replace(self, **overrides: Any) -> ModelSpec:
        """A copy with some fields changed, validated like a new spec (bad names/values: SpecError)."""
        names = [f.name for f in dataclasses.fields(self)]
        for key in overrides:
            if key not in names:
                hint = difflib.get_close_matches(key, names, n=1)
                did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
                raise SpecError(f"unknown model spec field {key!r}.{did_you_mean} Valid: {', '.join(names)}")
        k = overrides.get("kernel_size")
        padding = overrides.get("padding", self.padding)
        if self.kind == "cnn" and isinstance(k, int) and k > 0 and k % 2 == 0 and padding in (None, "same"):
            raise SpecError(f"kernel_size={k}: {self.to_string()!r} has 'same' padding (no p<int>), which needs an "
                            "odd kernel size; give the spec an explicit p<int> or valid")
        return dataclasses.replace(self, **overrides)


def parse_spec(text: str) -> ModelSpec:
    """Parse e.g. "mlp:300/sigmoid" or "cnn:20-50/k5/p0/fc500"; errors point at the bad token."""
    if not isinstance(text, str):
        raise SpecError(f"model spec must be a string, got {clip(text)}")
    text = text.strip()
    kind, colon, body = text.partition(":")
    if not colon:
        raise SpecError(f"model spec {clip(text)}: expected '<kind>:<widths>[/<option>...]', {EXAMPLE}")
    widths, *options = body.split("/")
    token = kind
    try:
        fields: dict[str, Any] = {"kind": _check_kind(kind)}
        token = widths
        fields["widths"] = _parse_widths(kind, widths)
        where: dict[str, str] = {}  # field -> the token that set it
        for token in options:
            name, value = _option(token, kind)
            if name in where:
                raise _Invalid(f"{_LABELS.get(name, name)} already given by {where[name]!r}")
            fields[name], where[name] = value, token
        token = where.get("kernel_size", "")
        if fields.get("padding") is None and fields.get("kernel_size", 3) % 2 == 0:
            raise _Invalid("'same' padding needs an odd kernel size; add p<int> or valid")
    except _Invalid as e:
        raise SpecError(f"model spec {clip(text)}: token {clip(token, 60)}: {e}") from None
    try:
        return ModelSpec(**fields)
    except SpecError as e:  # not expected: the tokens were checked above
        raise SpecError(f"model spec {clip(text)}: {e}") from None


def _parse_widths(kind: str, text: str) -> tuple[int, ...]:
    if kind == "mlp" and text in ("", "linear"):
        return ()  # no hidden layer: logistic regression
    if not text:
        raise _Invalid(f"a cnn needs at least one conv width ({EXAMPLE})")
    if kind == "mlp" and text == "0":
        raise _Invalid("width must be >= 1; use 'mlp:linear' for no hidden layer")
    return _check_ints(_ints(text, "width"), "width")


def _option(token: str, kind: str) -> tuple[str, Any]:
    """One '/'-separated option -> (ModelSpec field, checked value)."""
    name, value = _option_value(token)
    if kind != "cnn" and name in CNN_ONLY:
        raise _Invalid(f"{_LABELS.get(name, name)} only applies to cnn specs")
    return name, _CHECKS[name](value)


def _option_value(token: str) -> tuple[str, Any]:
    if token in ACTIVATION_TOKENS:
        return "activation", token
    for prefix, name in _ACTIVATION_PREFIXES:
        if token.startswith(prefix):
            return name, token[len(prefix):]
    if token in ("max", "avg", "nopool"):
        return "pool", token
    if token in ("same", "valid"):
        return "padding", token
    if token == "bn":
        return "batch_norm", True
    if token == "":
        raise _Invalid("empty option (a doubled or trailing '/')")
    for prefix, name in _PREFIXED:
        if token.startswith(prefix):
            return name, _VALUE_PARSERS[name](token[len(prefix):])
    raise _Invalid(f"unknown option. Valid: {', '.join(OPTIONS)}")


def _float(text: str) -> float:
    if not _FLOAT.fullmatch(text):
        raise _Invalid(f"dropout {clip(text, 40)} is not a number, e.g. drop0.5")
    return float(text)


def _int(text: str, label: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise _Invalid(f"{label} {clip(text, 40)} is not a whole number")
    if len(text) > 30:  # int() refuses 4,300+ digits; nothing buildable has 30
        raise _Invalid(f"{label} {clip(text, 40)} is too large")
    return int(text)


def _ints(text: str, label: str) -> tuple[int, ...]:
    if not text:
        raise _Invalid(f"expected {label}s like 16-32")
    return tuple(_int(part, label) for part in text.split("-"))


def _join(values: tuple[int, ...]) -> str:
    return "-".join(map(str, values))


# Field checks: value -> normalised value, or _Invalid. Shared by parse_spec and ModelSpec().
def _check_kind(value: Any) -> str:
    if value not in KINDS:
        raise _Invalid(f"unknown kind. Valid: {', '.join(KINDS)} ({EXAMPLE})")
    return value


def _check_ints(value: Any, label: str) -> tuple[int, ...]:
    if isinstance(value, str):
        value = _ints(value, label) if value else ()
    if not isinstance(value, (tuple, list)):
        raise _Invalid(f"expected a tuple of {label}s")
    return tuple(_check_int(v, label, 1) for v in value)


def _check_int(value: Any, label: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"{label} must be a whole number")
    if value < low:
        raise _Invalid(f"{label} must be >= {low}")
    return value


def _check_padding(value: Any) -> int | None:
    if value is None or value == "same":
        return None
    return 0 if value == "valid" else _check_int(value, "padding", 0)


def _check_pool(value: Any) -> str:
    value = "none" if value == "nopool" else value
    if value not in POOLS:
        raise _Invalid(f"unknown pool. Valid: {', '.join(POOLS)}")
    return value


def _check_activation(value: Any) -> str:
    if value not in ACTIVATIONS:
        raise _Invalid(f"unknown activation. Valid: {', '.join(ACTIVATIONS)}")
    return value


def _check_optional_activation(value: Any) -> str | None:
    return None if value is None else _check_activation(value)


def _check_dropout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise _Invalid("dropout must be a probability in [0, 1)")
    return float(value)


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("batch norm must be True or False")
    return value


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "kind": _check_kind,
    "widths": lambda v: _check_ints(v, "width"),
    "fc": lambda v: _check_ints(v, "fc width"),
    "kernel_size": lambda v: _check_int(v, "kernel size", 1),
    "padding": _check_padding,
    "pool": _check_pool,
    "pool_size": lambda v: _check_int(v, "pool size", 1),
    "activation": _check_activation,
    "conv_activation": _check_optional_activation,
    "fc_activation": _check_optional_activation,
    "dropout": _check_dropout,
    "batch_norm": _check_bool,
}

# Activation options: act:<name> (everywhere), conv-act:<name>, fc-act:<name> (one part only).
_ACTIVATION_PREFIXES = (("act:", "activation"), ("conv-act:", "conv_activation"), ("fc-act:", "fc_activation"))
# Options made of a prefix and a value; "pool" must be tried before "p".
_PREFIXED = (("pool", "pool_size"), ("p", "padding"), ("k", "kernel_size"), ("fc", "fc"), ("drop", "dropout"))
_VALUE_PARSERS: dict[str, Callable[[str], Any]] = {
    "pool_size": lambda t: _int(t, "pool size"),
    "padding": lambda t: _int(t, "padding"),
    "kernel_size": lambda t: _int(t, "kernel size"),
    "fc": lambda t: _ints(t, "fc width"),
    "dropout": _float,
}


def _combination_problem(spec: ModelSpec) -> tuple[str, str] | None:
    """(field, message) for fields that are fine alone but not together."""
    if spec.kind == "cnn" and not spec.widths:
        return "widths", f"a cnn needs at least one conv width ({EXAMPLE})"
    if spec.kind == "cnn" and spec.padding is None and spec.kernel_size % 2 == 0:
        return "padding", f"None ('same') needs an odd kernel_size, got {spec.kernel_size}; set an int"
    defaults = {f.name: f.default for f in dataclasses.fields(ModelSpec)}
    for name in CNN_ONLY:
        if spec.kind == "mlp" and getattr(spec, name) != defaults[name]:
            return name, "only applies to cnn specs"
    return None
