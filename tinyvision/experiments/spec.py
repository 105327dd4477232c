"""Experiment files: a base run config plus axes to vary (grid and/or zipped lists) and repeats.

    name: lr-sweep
    base: {dataset: mnist, model: lenet, optimizer: adam, epochs: 10}
    grid: {lr: [1.0e-5, 1.0e-4, 1.0e-3, 1.0e-2]}   # every combination of these
    zip:  {model: [mlp-40-40, lenet], batch_size: [64, 128]}   # varied together
    repeats: 3                                       # seeds base.seed, base.seed+1, ...

Everything is validated before anything runs: every point's config is built once here. A
`key=value` override changes the base config only: overriding a field that the grid or zip varies
is refused (the axis would silently win), see `check_overrides`.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import DEFAULT_REPEATS, RunConfig, _field_error, make_config, parse_override, read_yaml
from ..errors import ConfigError
from ..models import resolve_spec
from ..yamlfile import clip


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9._-]+$")
    kind: str = "sweep"  # sweep | compare (how reports present it)
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)
    repeats: int = Field(DEFAULT_REPEATS, ge=1, le=1000)


@dataclass(frozen=True)
class Point:
    """One combination of axis values, trained once per seed."""

    index: int
    values: dict[str, Any]

    @property
    def id(self) -> str:
        return f"p{self.index:02d}"

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "base"


@dataclass(frozen=True)
class Experiment:
    spec: ExperimentSpec
    base: RunConfig
    points: list[Point]

    @property
    def axes(self) -> list[str]:
        return [*self.spec.zip, *self.spec.grid]

    @property
    def seeds(self) -> list[int]:
        return [self.base.seed + r for r in range(self.spec.repeats)]

    def config(self, point: Point, seed: int) -> RunConfig:
        return make_config({**self.base.model_dump(), **point.values, "seed": seed})


def _check_axes(spec: ExperimentSpec) -> None:
    for section in ("grid", "zip"):
        for field, values in getattr(spec, section).items():
            if field not in RunConfig.model_fields or field == "seed":
                raise ConfigError(f"experiment {section}.{field}: not a run field that can vary "
                                  f"(valid: {', '.join(f for f in RunConfig.model_fields if f != 'seed')}; "
                                  "use repeats for seeds)")
            if not values:
                raise ConfigError(f"experiment {section}.{field}: needs at least one value")
    lengths = {len(v) for v in spec.zip.values()}
    if len(lengths) > 1:
        raise ConfigError("experiment zip: lists must have equal lengths, got "
                          + ", ".join(f"{k}={len(v)}" for k, v in spec.zip.items()))
    both = set(spec.grid) & set(spec.zip)
    if both:
        raise ConfigError(f"experiment: {', '.join(sorted(both))} is in both grid and zip")


def expand_points(spec: ExperimentSpec) -> list[Point]:
    zipped = [dict(zip(spec.zip, vals)) for vals in zip(*spec.zip.values())] or [{}]
    grid = [dict(zip(spec.grid, vals)) for vals in itertools.product(*spec.grid.values())] or [{}]
    return [Point(i, {**z, **g}) for i, (z, g) in enumerate(itertools.product(zipped, grid))]


def build_experiment(spec: ExperimentSpec | dict[str, Any], sources: Optional[dict[str, Any]] = None) -> Experiment:
    """Validate the spec and every point's config (and model spec) before anything runs."""
    if isinstance(spec, dict):
        try:
            spec = ExperimentSpec(**spec)
        except ValidationError as exc:
            raise _field_error(exc, prefix="experiment ", fields=list(ExperimentSpec.model_fields)) from None
    _check_axes(spec)
    try:
        base = make_config(spec.base)
    except ConfigError as exc:
        raise ConfigError(f"experiment base: {exc}") from None
    experiment = Experiment(spec, base, expand_points(spec))
    for point in experiment.points:
        try:
            cfg = experiment.config(point, base.seed)
        except ConfigError as exc:
            raise ConfigError(f"experiment point {point.label}: {exc}") from None
        check_model(cfg, sources or {})
    return experiment


def _plain(value: Any, limit: int = 60) -> str:
    """A value as typed (no quotes), cut to about `limit` characters."""
    text = str(value) if isinstance(value, (str, int, float)) else clip(value, limit)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    """ConfigError for an override of a field that the experiment (a spec as a dict) varies: its
    points would keep their own values, so the override would silently change nothing."""
    for section in ("zip", "grid"):
        axes = data.get(section) if isinstance(data.get(section), dict) else {}
        for field, value in overrides.items():
            if field in axes:
                values = axes[field] if isinstance(axes[field], list) else [axes[field]]
                shown = ", ".join(_plain(v, 40) for v in values[:8]) + (", ..." if len(values) > 8 else "")
                raise ConfigError(f"override {field}={_plain(value)}: the experiment varies {field} ({shown}); "
                                  "change the file's grid/zip instead")


def name_from_file(path: str | Path) -> str:
    """The default name of an experiment or tune file: its stem, made file-name-safe when it holds
    spaces or other letters than A-Z, digits, '.', '_' and '-' ("my sweep é.yaml": my_sweep)."""
    from ..runs import slug  # runs imports torch: only here

    stem = Path(path).stem
    return stem if re.fullmatch(r"[A-Za-z0-9._-]+", stem) else slug(stem)


def load_experiment(path: str | Path, *, overrides: Sequence[str] = (),
                    repeats: Optional[int] = None) -> Experiment:
    """An experiment file, with optional `key=value` overrides of its base config (not of a field
    that the file varies: ConfigError)."""
    data = read_yaml(path, "experiment file")
    data.setdefault("name", name_from_file(path))
    if overrides:
        changes = dict(parse_override(o) for o in overrides)
        check_overrides(data, changes)
        base = data.get("base") if isinstance(data.get("base"), dict) else {}
        data["base"] = {**base, **changes}
    if repeats is not None:
        data["repeats"] = repeats
    return build_experiment(data)


def check_model(cfg: RunConfig, sources: dict[str, Any]) -> None:
    """A point's model, before anything runs: a spec parses; a model class is found, and where the
    dataset's shape is known without loading it (a registered dataset), it is built and its output
    checked (models.source.ModelSource.check): a bad model file is one line, nothing written."""
    from ..data.catalog import DATASETS
    from ..models.source import resolve_model

    source = sources.get(cfg.model) or resolve_model(cfg.model, cfg.model_args)
    if source.is_spec:
        resolve_spec(cfg.model, **cfg.model_overrides())
    elif cfg.dataset in DATASETS:
        info = DATASETS.get(cfg.dataset)
        source.check(tuple(info.input_shape), len(info.classes), cfg.model_overrides())
