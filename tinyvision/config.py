"""One validated run configuration: defaults live here and nowhere else.

A config comes from a YAML file and/or `key=value` overrides; unknown keys, wrong types and
out-of-range values raise ConfigError naming the field, with the value shown cut to about 100
characters (yamlfile.clip). Every YAML read goes through tinyvision.yamlfile (bounded aliases,
duplicate keys refused). Each field's description, type and default also make the CLI flags'
help and `--help-config` (field_docs).
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .errors import ConfigError, UnknownNameError
from .yamlfile import YamlError, clip, load_yaml, read_yaml_file

Optimizer = Literal["sgd", "adam", "adamw", "adamax", "adadelta"]
Schedule = Literal["none", "exponential", "step", "cosine", "onecycle", "plateau"]
Init = Literal["default", "xavier", "kaiming", "normal"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # auto: measured (probe.py); fp16: GPUs, with a gradient scaler
Activation = Literal["relu", "sigmoid", "tanh", "gelu", "none"]  # none: no nonlinearity
NORMALIZE_MODES = ("dataset", "none", "unit")
LOSSES = ("cross_entropy", "mse", "nll")  # training.losses; a Python callable is recorded as "python:NAME"


class NormalizeStats(BaseModel):
    """Fixed per-channel statistics in [0, 1] units, as torchvision's Normalize after ToTensor
    (MNIST's mean 0.1307, std 0.3081): x -> (x / pixel_max - mean) / std. One value serves every channel."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mean: tuple[float, ...] = Field(min_length=1, max_length=4)
    std: tuple[float, ...] = Field(min_length=1, max_length=4)

    @field_validator("std")
    @classmethod
    def _positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v


class RunConfig(BaseModel):
    """Everything that defines one training run; saved as config.yaml in the run directory."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False)

    recipe: Optional[str] = Field(
        None, description="named set of defaults (see `tinyvision recipes`); fields given win")

    # data
    dataset: str = Field(
        "digits", description="dataset name (see `tinyvision datasets`), folder:PATH or npz:PATH")
    data_dir: Optional[str] = Field(
        None, description="dataset cache folder; None = $TINYVISION_DATA, else the user cache")
    val_size: Optional[Union[int, float]] = Field(
        None, description="validation images carved from train, a count or a fraction; "
                          "None = the dataset's default; 0 = none: train on every training image and "
                          "evaluate on the test set each epoch (labelled 'test (used as validation)')")
    split_seed: int = Field(
        0, ge=0, description="seeds the validation carve; fixed, so that seeds vary only training")
    train_subset: Optional[int] = Field(
        None, ge=1, description="train on the first N training images only; None = all")
    cv_folds: Optional[int] = Field(
        None, ge=2, le=100, description="k-fold cross-validation: train + validation images in this many folds, "
                                        "cv_fold the one validated on (the test split untouched); None = off")
    cv_fold: Optional[int] = Field(None, ge=0, description="which fold (0 to cv_folds - 1) validates")
    image_size: Optional[int] = Field(
        None, ge=4, le=512, description="pixels per side (folder: datasets only)")
    channels: Optional[Literal[1, 3]] = Field(
        None, description="1 = grayscale, 3 = RGB (folder: datasets only)")
    skip_bad_images: bool = Field(
        False, description="skip unreadable images and empty class folders, naming them "
                           "(folder: datasets only); false = refuse them in one error")
    augment: Literal["none", "translate", "flip-translate"] = Field(
        "none", description="training augmentation, on the device, whole batches at a time")
    translate: int = Field(2, ge=0, le=8, description="largest shift in pixels for augment")
    normalize: Union[Literal["dataset", "none", "unit"], NormalizeStats] = Field(
        "dataset", description="input scaling: dataset (standardise with the training split's mean/std), "
                               "none (values as stored: Digits 0..16, MNIST 0..255), unit (x / max: /255, "
                               "Digits /16) or {mean: [...], std: [...]} in [0, 1] units (MNIST: 0.1307, 0.3081)")

    # model
    model: str = Field(
        "digits-cnn", description="preset name (see `tinyvision models`), spec (e.g. cnn:16-32/k3/fc128), "
                                  "or your own nn.Module class: path/to/net.py:Net or package.module:Net")
    model_args: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for your model class's constructor, e.g. "
                                          "{width: 64}; in_channels, num_classes and input_shape are filled "
                                          "from the dataset where the constructor names them")
    activation: Optional[Activation] = Field(
        None, description="overrides the spec's activation (none: no nonlinearity)")
    conv_activation: Optional[Activation] = Field(
        None, description="overrides the activation after the convolutions only (spec: conv-act:NAME)")
    fc_activation: Optional[Activation] = Field(
        None, description="overrides the activation after the hidden dense layers only (spec: fc-act:NAME)")
    kernel_size: Optional[int] = Field(None, ge=1, le=15, description="overrides the spec's kernel size")
    dropout: Optional[float] = Field(None, ge=0.0, lt=1.0, description="overrides the spec's dropout")
    batch_norm: Optional[bool] = Field(None, description="overrides the spec's batch norm")
    init: Init = Field("default", description="weight initialisation")

    # optimisation
    optimizer: Optimizer = Field("adam", description="optimiser")
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="learning rate")
    momentum: float = Field(
        0.0, ge=0.0, lt=1.0, description="momentum (sgd only); 0 = plain SGD, as torch.optim.SGD")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd only; needs momentum > 0)")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay")
    schedule: Schedule = Field("none", description="learning-rate schedule")
    gamma: float = Field(
        0.95, gt=0.0, le=1.0,
        description="lr factor per epoch (exponential), per step_size epochs (step), or per plateau (plateau: "
                    "0.1 to 0.5 is usual; the default suits exponential)")
    step_size: int = Field(10, ge=1, description="epochs between step decays")
    plateau_patience: int = Field(
        3, ge=1, description="plateau: epochs without a lower validation NLL before the lr is multiplied by gamma")
    clip_grad_norm: Optional[float] = Field(
        None, gt=0.0, description="clip the gradients' total norm (each run's own) to this before each step; None = off")
    loss: str = Field(
        "cross_entropy", description="training loss: cross_entropy (softmax, with label_smoothing), mse (squared "
                                     "error of softmax outputs against one-hot targets), nll (outputs that are "
                                     "log-probabilities); in Python any callable (outputs, targets) -> scalar")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the loss (cross_entropy)")
    batch_size: int = Field(64, ge=1, le=1_000_000, description="training batch size")
    epochs: int = Field(10, ge=1, le=100_000, description="number of epochs")
    patience: Optional[int] = Field(
        None, ge=1, description="early stopping: stop after this many epochs in a row whose validation NLL "
                                "is not below the best so far minus min_delta; None = off")
    min_delta: float = Field(
        0.0, ge=0.0, description="how far below the best validation NLL an epoch must get to count as better")
    restore_best: Optional[bool] = Field(
        None, description="true: evaluate and save the weights of the epoch with the lowest validation NLL; "
                          "false: the last epoch's; None = true, but false with val_size=0 (no test-picked weights)")
    eval_before: bool = Field(
        False, description="evaluate train and validation before the first step: metrics.csv row epoch 0")
    log_every: Optional[int] = Field(
        None, ge=1, description="write steps.csv: training loss/accuracy over every N steps, with the lr; "
                                "None = per-epoch metrics only")
    tta: bool = Field(
        False, description="test-time augmentation at evaluation: 1-px shifts, + mirror with flip augment")
    top_k: int = Field(5, ge=1, le=1000, description="top-k accuracy in the test metrics (k at most the classes)")
    calibration_bins: int = Field(
        15, ge=2, le=1000, description="equal-width confidence bins of the expected calibration error and "
                                       "the reliability diagram")

    # execution
    seed: int = Field(0, ge=0, lt=2**63, description="random seed (weights, order, augmentation)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads; None = auto: measured (probe.py), else all cores")
    channels_last: Optional[bool] = Field(
        None, description="NHWC memory layout for convolutional models; None = auto: measured (probe.py)")
    compile: bool = Field(False, description="torch.compile the model")
    precision: Precision = Field(
        "auto",
        description="auto: the faster of fp32 and bf16 autocast, measured on this machine (probe.py); fp32, bf16 "
                    "or fp16 (GPUs, with a gradient scaler) force it")
    deterministic: bool = Field(False, description="torch deterministic algorithms (GPU)")
    eval_batch_size: int = Field(1024, ge=1, description="batch size at evaluation")

    @field_validator("val_size")
    @classmethod
    def _val_size_range(cls, v: Optional[Union[int, float]]) -> Optional[Union[int, float]]:
        if v is None:
            return v
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError("a fraction must be in (0, 1)")
        if isinstance(v, int) and v < 0:
            raise ValueError("a count must be >= 0 (0: no validation split, the test set is watched instead)")
        return v

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        if v not in LOSSES and not v.startswith("python:"):
            raise ValueError(f"must be one of {', '.join(LOSSES)}")
        return v

    @field_validator("model_args")
    @classmethod
    def _plain_args(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in v if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise ValueError(f"keys must be argument names, got {clip(bad[0], 40)!r}")
        return v

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize_form(cls, v: Any) -> Any:
        # one message instead of pydantic's union of a literal and a model error
        if (isinstance(v, str) and v not in NORMALIZE_MODES) or not isinstance(v, (str, dict, NormalizeStats)):
            raise ValueError(f"must be one of {', '.join(NORMALIZE_MODES)} or {{mean: [...], std: [...]}}")
        if isinstance(v, dict):
            try:
                return NormalizeStats.model_validate(v)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"{where}: {err['msg'].removeprefix('Value error, ')}") from None
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
        if (self.cv_folds is None) != (self.cv_fold is None):
            raise ValueError("cv_folds and cv_fold go together (cv_fold from 0 to cv_folds - 1)")
        if self.cv_folds is not None and self.val_size is not None:
            raise ValueError("val_size does not apply with cv_folds: each fold of the train and validation "
                             "images validates in turn; leave val_size unset")
        if self.cv_folds is not None and self.cv_fold >= self.cv_folds:
            raise ValueError(f"cv_fold {self.cv_fold} is beyond cv_folds {self.cv_folds} (0 to {self.cv_folds - 1})")
        return self

    @property
    def validates_on_test(self) -> bool:
        """val_size=0: no validation split; each epoch is evaluated on the test set instead."""
        return self.val_size == 0

    @property
    def flips(self) -> bool:
        """Trained on mirror images too, so test-time augmentation may average the mirror image."""
        return self.augment == "flip-translate"

    def model_overrides(self) -> dict[str, Any]:
        """The spec fields this config overrides (those not left at None)."""
        fields = ("activation", "conv_activation", "fc_activation", "kernel_size", "dropout", "batch_norm")
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
    return _error_line(exc.errors()[0], prefix, fields)


def _error_line(err: Any, prefix: str = "config ", fields: Optional[list[str]] = None) -> ConfigError:
    """One pydantic error (a dict of ValidationError.errors()) as a ConfigError line; the value
    given is cut to about 100 characters (a YAML file may hold a 30 MB string)."""
    field = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # how fields combine (a model check): the message names them; the input is all of it
        return ConfigError(f"{prefix.strip()}: {msg}")
    if err["type"] == "extra_forbidden":
        fields = fields or list(RunConfig.model_fields)
        hint = difflib.get_close_matches(field[:200], fields, n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        valid = ", ".join(fields)
        return ConfigError(f"unknown {prefix}field {clip(field, 60)}.{did_you_mean} Valid fields: {valid}")
    if err["type"] == "missing":  # its "input" is the whole enclosing mapping: not worth a line
        return ConfigError(f"{prefix}field {clip(field, 60)} is required")
    if err["type"] == "literal_error":
        return ConfigError(f"{prefix}field {clip(field, 60)}: {msg}, got {clip(err.get('input'))}")
    return ConfigError(f"{prefix}field {clip(field, 60)}: {msg} (got {clip(err.get('input'))})")


def check_fields(values: dict[str, Any], prefix: str = "config ") -> None:
    """Validate each field of `values` on its own (type, range), ignoring how the fields combine:
    for values that something later replaces (`train --epochs 1 epochs=abc` must still refuse
    `abc`). Unknown fields are refused too."""
    for key, value in values.items():
        try:
            RunConfig.model_validate({key: value})
        except ValidationError as exc:
            own = [e for e in exc.errors() if e["loc"][:1] == (key,)]  # not the cross-field checks
            if own:
                raise _error_line(own[0], prefix) from None


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


MAPPING_FIELDS = frozenset({"normalize", "model_args"})  # fields whose override may be a YAML mapping


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` -> (key, YAML-typed value): `lr=0.01` gives a float, `model=mlp:40` a string.

    The value is parsed by tinyvision.yamlfile (aliases bounded); text that is not a YAML scalar
    (a mapping such as `cnn:16`, a list, a parse error, an alias bomb) stays the text typed."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ConfigError(f"override {clip(text)} is not of the form key=value")
    try:
        value = load_yaml(raw, source=f"override {key[:40]}") if raw.strip() else None
    except YamlError:
        value = raw
    if isinstance(value, (dict, list)) and key not in MAPPING_FIELDS:  # e.g. model=cnn: 16; keep the text
        value = raw
    return key, value


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file holding a mapping (a run config, an experiment or tune file), read with
    tinyvision.yamlfile: a directory, a binary or over-large file, a duplicate key or an alias
    bomb is a one-line YamlError (exit 2) naming the file (and line). An empty file (nothing but
    comments) is refused too: it is a wrong or unsaved file more often than a wish for defaults."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise ConfigError(f"{what} {path} does not exist")
    data = read_yaml_file(path)
    if data is None:
        raise ConfigError(f"{what} {path} is empty: it holds no field: value lines")
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of field: value, found a {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                **fields: Any) -> RunConfig:
    """YAML file (optional) < `key=value` overrides < keyword fields (e.g. from CLI flags).

    A value that a later one replaces is still checked on its own (check_fields)."""
    return make_config(requested_values(path, overrides, **fields))


def requested_values(path: str | Path | None = None, overrides: list[str] | None = None,
                     **fields: Any) -> dict[str, Any]:
    """The fields a file, overrides and keyword fields ask for (None fields left out), merged in
    that order; each value replaced by a later one is validated on its own first."""
    layers = [read_yaml(path) if path else {}, *({k: v} for k, v in map(parse_override, overrides or [])),
              {k: v for k, v in fields.items() if v is not None}]
    values: dict[str, Any] = {}
    for layer in layers:
        check_fields({k: values[k] for k in layer if k in values})  # about to be replaced
        values.update(layer)
    return values


def dump_config(config: RunConfig) -> str:
    """YAML text that `load_config` reads back into an equal config."""
    return yaml.safe_dump(config.model_dump(), sort_keys=False)


# Seeds per experiment point (compare, run) when neither the file nor --repeats says: enough for a
# 95% CI and a t-test to mean something (the README's Digits comparison: 2 x 5 runs in about a minute).
DEFAULT_REPEATS = 5
