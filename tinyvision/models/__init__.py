"""Models: spec strings, MLP/CNN builders, named presets and summaries (params, MACs)."""
from __future__ import annotations

from .build import Classifier, build_model
from .presets import MODELS, Preset, create_model, list_models, resolve_spec
from .spec import ACTIVATIONS, KINDS, POOLS, ModelSpec, parse_spec
from .summary import LayerRow, ModelSummary, count_parameters, format_summary, summarize

__all__ = [
    "ACTIVATIONS", "KINDS", "MODELS", "POOLS", "Classifier", "LayerRow", "ModelSpec", "ModelSummary",
    "Preset", "build_model", "count_parameters", "create_model", "format_summary", "list_models",
    "parse_spec", "resolve_spec", "summarize",
]
