"""One validated run configuration: defaults live here and nowhere else.

A config comes from a YAML file and/or `key=value` overrides; unknown keys, wrong types and
out-of-range values raise ConfigError naming the field.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .errors import ConfigError, UnknownNameError

Optimizer = Literal["sgd", "adam", "adamw", "adamax", "adadelta"]
Schedule = Literal["none", "exponential", "step", "cosine", "onecycle"]
Init = Literal["default", "xavier", "kaiming", "normal"]
Precision = Literal["auto", "fp32", "bf16"]  # resolved by runtime.autocast_dtype


class RunConfig(BaseModel):
    """Everything that defines one training run; saved as config.yaml in the run directory."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False)

    recipe: Optional[str] = None  # named set of defaults (see `tinyvision recipes`); fields given win

    # data
    dataset: str = "digits"  # registry name, or folder:PATH / npz:PATH
    data_dir: Optional[str] = None  # cache of dataset files (else $TINYVISION_DATA, else user cache)
    val_size: Optional[Union[int, float]] = None  # count or fraction carved from train; None = dataset default
    split_seed: int = Field(0, ge=0)  # seeds the validation carve; fixed so seeds vary only training
    train_subset: Optional[int] = Field(None, ge=1)  # train on the first N training images only
    image_size: Optional[int] = Field(None, ge=4, le=512)  # folder: datasets only (pixels per side)
    channels: Optional[Literal[1, 3]] = None  # folder: datasets only
    augment: Literal["none", "translate", "flip-translate"] = "none"  # on-device, whole batches
    translate: int = Field(2, ge=0, le=8)  # max shift in pixels for augment

    # model
    model: str = "digits-cnn"  # preset name or spec such as cnn:16-32/k3/fc128
    activation: Optional[Literal["relu", "sigmoid", "tanh", "gelu"]] = None  # overrides the spec
    kernel_size: Optional[int] = Field(None, ge=1, le=15)  # overrides the spec
    dropout: Optional[float] = Field(None, ge=0.0, lt=1.0)  # overrides the spec
    batch_norm: Optional[bool] = None  # overrides the spec
    init: Init = "default"

    # optimisation
    optimizer: Optimizer = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd only
    nesterov: bool = False  # sgd only (needs momentum > 0)
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Schedule = "none"
    gamma: float = Field(0.95, gt=0.0, le=1.0)  # exponential: lr factor per epoch; step: factor per step_size
    step_size: int = Field(10, ge=1)  # epochs between step decays
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    epochs: int = Field(10, ge=1, le=100_000)
    patience: Optional[int] = Field(None, ge=1)  # early stopping on validation NLL; None = off
    min_delta: float = Field(0.0, ge=0.0)  # improvement in validation NLL that resets patience
    tta: bool = False  # test-time augmentation at evaluation: 1-px shifts, + mirror with flip augment

    # execution
    seed: int = Field(0, ge=0, lt=2**63)
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    threads: Optional[int] = Field(None, ge=1)  # CPU threads; None = all cores
    compile: bool = False  # torch.compile the model
    precision: Precision = "auto"  # bf16 autocast where it pays (runtime.autocast_dtype)
    deterministic: bool = False  # torch deterministic algorithms (GPU)
    eval_batch_size: int = Field(1024, ge=1)

    @field_validator("val_size")
    @classmethod
    def _val_size_range(cls, v: Optional[Union[int, float]]) -> Optional[Union[int, float]]:
        if v is None:
            return v
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError("a fraction must be in (0, 1)")
        if isinstance(v, int) and v < 1:
            raise ValueError("a count must be >= 1")
        return v

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1: `epochs=true` must be an error, not one epoch
        if isinstance(v, bool) and info.field_name in NUMERIC_FIELDS:
            raise ValueError("must be a number, not a boolean")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer=sgd and momentum > 0")
        return self

    @property
    def flips(self) -> bool:
        """Trained on mirror images too, so test-time augmentation may average the mirror image."""
        return self.augment == "flip-translate"

    def model_overrides(self) -> dict[str, Any]:
        """The spec fields this config overrides (those not left at None)."""
        fields = ("activation", "kernel_size", "dropout", "batch_norm")
        return {k: getattr(self, k) for k in fields if getattr(self, k) is not None}


def _is_numeric(annotation: Any) -> bool:
    """int, float, a Literal of ints, or an Optional/Union holding one of them."""
    origin, args = getattr(annotation, "__origin__", None), getattr(annotation, "__args__", ())
    if origin is Union:
        return any(_is_numeric(a) for a in args if a is not type(None))
    if origin is Literal:
        return all(isinstance(a, int) and not isinstance(a, bool) for a in args)
    return annotation in (int, float)


NUMERIC_FIELDS = frozenset(name for name, f in RunConfig.model_fields.items() if _is_numeric(f.annotation))


def _field_error(exc: ValidationError, prefix: str = "config ",
                 fields: Optional[list[str]] = None) -> ConfigError:
    """The first validation error as one line naming the field (and the allowed values)."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        fields = fields or list(RunConfig.model_fields)
        hint = difflib.get_close_matches(field, fields, n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        valid = ", ".join(fields)
        return ConfigError(f"unknown {prefix}field {field!r}.{did_you_mean} Valid fields: {valid}")
    if err["type"] == "missing":  # its "input" is the whole enclosing mapping: not worth a line
        return ConfigError(f"{prefix}field {field!r} is required")
    if err["type"] == "literal_error":
        return ConfigError(f"{prefix}field {field!r}: {msg}, got {err.get('input')!r}")
    return ConfigError(f"{prefix}field {field!r}: {msg} (got {err.get('input')!r})")


def make_config(values: dict[str, Any] | None = None, **overrides: Any) -> RunConfig:
    """Validate a dict of fields (plus keyword overrides) into a RunConfig."""
    merged = {**(values or {}), **overrides}
    if merged.get("recipe"):
        from .recipes import recipe_values  # recipes sit above config: import on use

        try:
            merged = {**recipe_values(str(merged["recipe"])), **merged}
        except UnknownNameError as exc:
            raise ConfigError(f"config field 'recipe': {exc}") from None
    try:
        return RunConfig(**merged)
    except ValidationError as exc:
        raise _field_error(exc) from None


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` -> (key, YAML-typed value): `lr=1e-3` gives a float, `model=mlp:40` a string."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)):  # e.g. model=cnn:16 is a YAML mapping; keep the text
        value = raw
    return key, value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                **fields: Any) -> RunConfig:
    """YAML file (optional) < `key=value` overrides < keyword fields (e.g. from CLI flags)."""
    values = read_yaml(path) if path else {}
    values.update(parse_override(o) for o in overrides or [])
    values.update({k: v for k, v in fields.items() if v is not None})
    return make_config(values)


def dump_config(config: RunConfig) -> str:
    """YAML text that `load_config` reads back into an equal config."""
    return yaml.safe_dump(config.model_dump(), sort_keys=False)
