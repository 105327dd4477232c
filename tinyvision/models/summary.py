"""Model summaries: per-layer output shapes, parameters and multiply-accumulates (MACs).

MACs count only Conv and Linear layers (out_elements * in_channels/groups * kernel area, and
in_features * out_features per output row); batch norm, activations, pooling and dropout count 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..tables import dims, label, num, to_text

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


def summary_rows(summary: ModelSummary) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one row per layer, the totals row): name, kind, output (text), params, macs; shared by
    the terminal table here and the report's layer table."""
    rows = [{"name": r.name, "kind": r.kind, "output": dims(r.output_shape), "params": r.params,
             "macs": r.macs} for r in summary.rows]
    total = {"name": "total", "kind": "", "output": dims(summary.input_shape) + " in",
             "params": summary.params, "macs": summary.macs}
    return rows, total


def format_summary(summary: ModelSummary) -> str:
    """An aligned text table (layer, kind, output shape, params, MACs) with a totals line."""
    columns = [("name", "layer", label), ("kind", "kind", label), ("output", "output", label),
               ("params", "params", num), ("macs", "MACs", num)]
    rows, total = summary_rows(summary)
    text = to_text(rows, columns, footer=[total])
    if summary.trainable_params != summary.params:
        text += f"\ntrainable params: {summary.trainable_params:,}"
    return text


def summary_record(summary: ModelSummary) -> dict[str, Any]:
    """The summary as plain JSON data (result.json keeps it, so reports need not rebuild the model)."""
    return {"input_shape": list(summary.input_shape), "params": summary.params,
            "trainable_params": summary.trainable_params, "macs": summary.macs,
            "rows": [[r.name, r.kind, list(r.output_shape), r.params, r.macs] for r in summary.rows]}


def summary_from_record(record: dict[str, Any]) -> ModelSummary:
    """The inverse of summary_record."""
    rows = tuple(LayerRow(str(name), str(kind), tuple(int(d) for d in shape), int(params), int(macs))
                 for name, kind, shape, params, macs in record["rows"])
    return ModelSummary(tuple(int(d) for d in record["input_shape"]), rows, int(record["params"]),
                        int(record["trainable_params"]), int(record["macs"]))
