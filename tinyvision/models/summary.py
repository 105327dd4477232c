"""Model summaries: per-layer output shapes, parameters and multiply-accumulates (MACs).

MACs count only Conv and Linear layers (out_elements * in_channels/groups * kernel area, and
in_features * out_features per output row); batch norm, activations, pooling and dropout count 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerRow:
    """One call of a leaf module; output_shape excludes the batch dimension."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class ModelSummary:
    """Rows in call order; params/trainable_params count the whole model, macs is per sample."""

    input_shape: tuple[int, ...]
    rows: tuple[LayerRow, ...]
    params: int
    trainable_params: int
    macs: int


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> ModelSummary:
    """Run one zero sample of shape input_shape through the model in eval mode and record each leaf."""
    rows: list[LayerRow] = []
    seen: set[int] = set()  # a module called twice reports its parameters once

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: object) -> None:
            out = output if isinstance(output, torch.Tensor) else _first_tensor(output)
            params = 0 if id(module) in seen else sum(p.numel() for p in module.parameters())
            seen.add(id(module))
            shape = tuple(out.shape[1:]) if out is not None else ()
            rows.append(LayerRow(name, type(module).__name__, shape, params, _macs(module, out)))
        return record

    leaves = [(n, m) for n, m in model.named_modules() if not any(m.children())]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    modes = {m: m.training for m in model.modules()}
    first = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, device=first.device if first is not None else "cpu",
                    dtype=first.dtype if first is not None and first.is_floating_point() else torch.float32)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes.items():
            m.training = training
    return ModelSummary(tuple(input_shape), tuple(rows), count_parameters(model),
                        count_parameters(model, trainable_only=True), sum(r.macs for r in rows))


def _first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


def _macs(module: nn.Module, out: torch.Tensor | None) -> int:
    """Multiply-accumulates for a batch of one (the hook's output has batch size 1)."""
    if out is None:
        return 0
    if isinstance(module, _CONVS):
        return out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


def format_summary(summary: ModelSummary) -> str:
    """An aligned text table (layer, kind, output shape, params, MACs) with a totals line."""
    header = ("layer", "kind", "output", "params", "MACs")
    body = [(r.name, r.kind, _shape(r.output_shape), f"{r.params:,}", f"{r.macs:,}") for r in summary.rows]
    total = ("total", "", _shape(summary.input_shape) + " in", f"{summary.params:,}", f"{summary.macs:,}")
    table = [header, *body, total]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:  # text columns left-aligned, numbers right-aligned
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(tuple("x" * w for w in widths)))
    lines = [line(header), rule, *map(line, body), rule, line(total)]
    if summary.trainable_params != summary.params:
        lines.append(f"trainable params: {summary.trainable_params:,}")
    return "\n".join(lines)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "-"
