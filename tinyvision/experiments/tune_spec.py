"""Tune files: a base run config plus a search space, validated before anything runs.

    name: tune-digits
    base: {dataset: digits, model: digits-cnn, epochs: 15}
    search:
      lr: {low: 1.0e-4, high: 1.0e-1, log: true}   # float range (log scale)
      batch_size: [32, 64, 128]                      # categorical
      epochs: {low: 5, high: 20, int: true}          # int range (whole-number fields always are)
    trials: 20                                       # finished trials the study should hold
    direction: minimize                              # objective: best validation NLL
    sampler: {seed: 0, startup_trials: 10}           # TPE; random trials before it models results
    pruner: {startup_trials: 5, warmup_epochs: 1}    # median rule on val NLL per epoch; none = off

Every extreme point (corner) of the search space is checked to make a valid run config.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import RunConfig, _field_error, make_config, parse_override, read_yaml
from ..errors import ConfigError, TinyVisionError
from ..models import resolve_spec
from .spec import name_from_file

MACHINE_FIELDS = {"data_dir", "device", "threads"}  # may differ between machines sharing a study
MAX_CORNERS = 4096  # search corners validated together; beyond this each axis alone


class RangeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    low: float
    high: float
    log: bool = False
    integer: Optional[bool] = Field(None, alias="int")  # None: from the run field's type
    step: Optional[float] = Field(None, gt=0)


class SamplerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0)
    startup_trials: int = Field(10, ge=0)  # random trials before TPE models the results


class PrunerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    startup_trials: int = Field(5, ge=0)  # completed trials before anything is pruned
    warmup_epochs: int = Field(1, ge=0)  # first epochs of a trial that are never pruned


class TuneFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("tune", pattern=r"^[A-Za-z0-9._-]+$")
    base: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, Any] = Field(min_length=1)
    trials: int = Field(20, ge=1, le=100_000)
    direction: Literal["minimize"] = "minimize"  # the objective is the best validation NLL
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: Optional[PrunerSpec] = Field(default_factory=PrunerSpec)

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_off(cls, v: Any) -> Any:
        return None if v in ("none", "off", False) else v


@dataclass(frozen=True)
class Dimension:
    """One searched field: a list of choices, or a range."""

    name: str
    choices: Optional[tuple] = None
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    step: Optional[float] = None

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list[Any]:
        if self.choices is not None:
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.integer else [self.low, self.high]


@dataclass(frozen=True)
class TuneSpec:
    file: TuneFile
    base: RunConfig
    space: dict[str, Dimension]

    @property
    def name(self) -> str:
        return self.file.name

    def config(self, params: dict[str, Any], threads: Optional[int] = None) -> RunConfig:
        values = {**self.base.model_dump(), **params}
        values["threads"] = values["threads"] or threads
        return make_config(values)

    def record(self) -> dict[str, Any]:
        """What must match to continue a study: not the trial count (it may grow), the file's
        name or where each machine keeps its data and computes (data_dir, device, threads)."""
        record = self.file.model_dump(mode="json", by_alias=True, exclude={"trials", "name"})
        record["base"] = {k: v for k, v in record["base"].items() if k not in MACHINE_FIELDS}
        return record


def _model_fields(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names (aliases) of the (nested) model an error location points into."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        kinds = (get_args(field.annotation) or [field.annotation]) if field else []
        nested = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if not nested:
            break
        model = nested[0]
    return [f.alias or name for name, f in model.model_fields.items()]


def _validate(model: type[BaseModel], data: Any, prefix: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _field_error(exc, prefix, _model_fields(model, exc.errors()[0]["loc"])) from None


def _whole_field(name: str) -> bool:
    annotation = RunConfig.model_fields[name].annotation
    return {a for a in get_args(annotation) if a is not type(None)} == {int} or annotation is int


def _dimension(name: str, raw: Any) -> Dimension:
    where = f"tune search.{name}"
    if name not in RunConfig.model_fields or name == "seed":
        raise ConfigError(f"{where}: not a run field that can be tuned (valid: "
                          f"{', '.join(f for f in RunConfig.model_fields if f != 'seed')})")
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(f"{where}: needs at least one choice")
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in raw):
            raise ConfigError(f"{where}: choices must be numbers, strings, booleans or null, got {raw!r}")
        return Dimension(name, choices=tuple(raw))
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: give a list of choices or a range {{low, high[, log, int, step]}}, got {raw!r}")
    r: RangeSpec = _validate(RangeSpec, raw, f"{where} ")
    integer = _whole_field(name) if r.integer is None else r.integer
    if r.integer is False and _whole_field(name):
        raise ConfigError(f"{where}: {name} takes whole numbers; drop `int: false`")
    if integer and any(v is not None and float(v) != int(v) for v in (r.low, r.high, r.step)):
        raise ConfigError(f"{where}: an int range needs whole low, high and step, got {raw!r}")
    if not r.low < r.high:
        raise ConfigError(f"{where}: low must be below high, got low={r.low} high={r.high}")
    if r.log and (r.low <= 0 or r.step is not None):
        raise ConfigError(f"{where}: a log range needs low > 0 and no step")
    return Dimension(name, low=r.low, high=r.high, log=r.log, integer=integer, step=r.step)


def _check_corners(spec: TuneSpec) -> None:
    """Every extreme point of the search space must make a valid run config."""
    dims = list(spec.space.values())
    grid = list(itertools.islice(itertools.product(*(d.corners() for d in dims)), MAX_CORNERS + 1))
    if len(grid) > MAX_CORNERS:  # too many combinations: each axis alone
        base = spec.base.model_dump()
        grid = [tuple(c if d is dim else base[d.name] for d in dims) for dim in dims for c in dim.corners()]
    for values in grid:
        params = dict(zip(spec.space, values))
        try:
            cfg = spec.config(params)
            resolve_spec(cfg.model, **cfg.model_overrides())
        except TinyVisionError as exc:
            label = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ConfigError(f"tune search: the point {label} is not a valid run: {exc}") from None


def build_tune(data: dict[str, Any] | TuneFile) -> TuneSpec:
    """Validate a tune file's contents and every corner of its search space."""
    tf: TuneFile = data if isinstance(data, TuneFile) else _validate(TuneFile, data, "tune ")
    try:
        base = make_config(tf.base)
    except ConfigError as exc:
        raise ConfigError(f"tune base: {exc}") from None
    spec = TuneSpec(tf, base, {name: _dimension(name, raw) for name, raw in tf.search.items()})
    _check_corners(spec)
    return spec


def load_tune(path: str | Path, overrides: Sequence[str] = ()) -> TuneSpec:
    """A tune file; `key=value` overrides fix base fields (a searched field given here is fixed)."""
    data = read_yaml(path, "tune file")
    data.setdefault("name", name_from_file(path))
    if overrides:
        fixed = dict(parse_override(o) for o in overrides)
        base = data.get("base") if isinstance(data.get("base"), dict) else {}
        data["base"] = {**base, **fixed}
        if isinstance(data.get("search"), dict):
            data["search"] = {k: v for k, v in data["search"].items() if k not in fixed}
    return build_tune(data)
