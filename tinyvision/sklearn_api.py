"""scikit-learn's estimator interface to tinyvision's training: TinyVisionClassifier(model="digits-mlp",
**config) fits on numpy arrays and works in cross_val_score, GridSearchCV and pipelines.

    from sklearn.datasets import load_digits
    from sklearn.model_selection import cross_val_score
    X, y = load_digits(return_X_y=True)                     # (1797, 64): 8x8 images, flattened
    cross_val_score(TinyVisionClassifier(epochs=30), X, y, cv=3)

Every run config field (config.py) but the data source's (dataset, data_dir, image_size, channels,
skip_bad_images, cv_folds, cv_fold, recipe) is a parameter with the config's default; the seed is
`random_state`. fit builds an ImageDataset from the arrays and trains it through pipeline.prepare
and training.loop.train, the path every run takes, in memory: no run directory is written.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import math
from typing import Any, Optional

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .config import RunConfig, make_config
from .data.loader import DeviceLoader
from .data.splits import ImageDataset, carve, check_val_size, make_split, val_count
from .errors import ConfigError, TinyVisionError
from .evaluate import predict_loader
from .pipeline import prepare
from .training.loop import train as train_loop

try:  # scikit-learn >= 1.6: the public function (earlier: a private method)
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - the tested versions have it
    validate_data = None

NOT_PARAMS = ("dataset", "data_dir", "image_size", "channels", "skip_bad_images", "cv_folds", "cv_fold",
              "recipe", "seed", "model")  # the data come from X and y; seed is random_state; model comes first
WATCH = 256  # training images the loop "validates" on each epoch without val_size (only a divergence check)


def _defaults() -> dict[str, Any]:
    """Parameter -> default: the config's (None where it builds one: model_args), then ours."""
    out = {name: (None if field.default_factory is not None else field.default)
           for name, field in RunConfig.model_fields.items() if name not in NOT_PARAMS}
    out["val_size"] = None  # here: no validation split (the config's None is the dataset's default)
    return {**out, "image_shape": None, "random_state": 0}


PARAMS = _defaults()


class TinyVisionClassifier(ClassifierMixin, BaseEstimator):
    """A tinyvision model as a scikit-learn classifier.

    model: a preset, spec, file.py:Class, or an nn.Module class, instance (copied at fit) or factory.
    X: (N, D) flattened images, (N, H, W) or (N, C, H, W), in any pixel units (normalize="dataset",
    the default, standardises with the training images' mean and std per channel). A flat D is an
    8x8 image for D = 64, in general s x s for D = s*s, 3 x s x s (channels first, as CIFAR's rows) for
    D = 3*s*s, else a 1 x D row (an MLP reads it as it is; a CNN needs image_shape=(C, H, W)).
    predict takes X in the layout fit took (scikit-learn checks n_features_in_: X.shape[1]).
    val_size: None (default) trains on every image, without early stopping; a count or fraction
    carves a validation split (split_seed) from X for patience and restore_best.
    random_state: an int seeds the weights, order and augmentation (0: as `tinyvision train`);
    None draws a seed from numpy's global generator, a RandomState one from it.
    Fitted: classes_, n_features_in_, image_shape_, history_ (per-epoch metrics), module_ (the
    trained nn.Module, on the CPU), normalization_.
    """

    def __init__(self, model: Any = "digits-mlp", **params: Any) -> None:
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            hint = difflib.get_close_matches(unknown[0], list(PARAMS), n=1)
            raise ConfigError(f"TinyVisionClassifier has no parameter {unknown[0]!r}"
                              f"{f'; did you mean {hint[0]!r}?' if hint else ''} (valid: model, {', '.join(PARAMS)})")
        self.model = model
        for name, default in PARAMS.items():
            setattr(self, name, params.get(name, default))

    # -- fitting --------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> "TinyVisionClassifier":
        """Train a new model on X, y (previous fits are forgotten)."""
        X, y = _validate(self, X, y)
        check_classification_targets(y)
        self.classes_, labels = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ConfigError(f"y holds one class ({self.classes_[0]!r}); a classifier needs at least two")
        images = self._images(X, fitting=True)
        cfg = self._config()
        data = _dataset(images, labels.astype(np.int64), tuple(map(str, self.classes_)), cfg, self.val_size)
        model = copy.deepcopy(self.model) if isinstance(self.model, torch.nn.Module) else self.model
        loss = self.loss if callable(self.loss) else None
        trainee, data = prepare([cfg], None if isinstance(model, str) else model, loss, data)
        for _ in train_loop(trainee):
            pass
        member = trainee.members[0]
        if member.outcome is None or member.outcome.status != "completed":
            raise TinyVisionError(f"training {member.outcome.status if member.outcome else 'stopped'}: "
                                  f"{member.outcome.reason if member.outcome else ''}".rstrip(": "))
        self.history_ = member.history
        self.module_ = trainee.net.to("cpu", memory_format=torch.contiguous_format).eval()
        self.normalization_ = trainee.training_loader().norm
        self.config_ = cfg
        return self

    def _config(self) -> RunConfig:
        """The run config fit trains with (the parameters, the seed drawn from random_state)."""
        values = {name: getattr(self, name) for name in PARAMS if name not in ("image_shape", "random_state")}
        values["model_args"] = dict(values["model_args"] or {})
        values["val_size"] = 0 if self.val_size is None else self.val_size  # 0: the loop watches WATCH images
        if callable(values["loss"]):
            values["loss"] = "cross_entropy"  # recorded by prepare as python:NAME
        if self.val_size is None and (self.patience is not None or self.restore_best):
            raise ConfigError("patience and restore_best pick epochs by a validation split: give val_size "
                              "(a count or a fraction of X to hold out)")
        model = self.model if isinstance(self.model, str) else "digits-mlp"  # a Python model replaces it
        return make_config({**values, "model": model, "seed": _seed(self.random_state)})

    def _images(self, X: np.ndarray, fitting: bool = False) -> np.ndarray:
        """X as (N, C, H, W): flat rows reshaped (image_shape, else inferred), (N, H, W) one channel."""
        if X.ndim == 2:
            if not fitting:
                shape = self.image_shape_
            else:
                shape = tuple(self.image_shape) if self.image_shape is not None else infer_image_shape(X.shape[1])
            if math.prod(shape) != X.shape[1]:
                raise ConfigError(f"image_shape {tuple(shape)} holds {math.prod(shape)} values, X's rows {X.shape[1]}")
            images = X.reshape(len(X), *shape)
        elif X.ndim in (3, 4):
            images = X[:, None] if X.ndim == 3 else X
        else:
            raise ConfigError(f"X must be (N, D) rows, (N, H, W) or (N, C, H, W) images, got {X.ndim} dimensions")
        if fitting:
            self.image_shape_ = tuple(images.shape[1:])
        elif tuple(images.shape[1:]) != self.image_shape_:
            raise ConfigError(f"X holds images of shape {tuple(images.shape[1:])}; fitted on {self.image_shape_}")
        return images

    # -- predicting -----------------------------------------------------------------------------

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, classes) probabilities, columns in the order of classes_."""
        check_is_fitted(self, "module_")
        images = self._images(_validate(self, X), fitting=False)
        split = make_split(images, np.zeros(len(images), dtype=np.int64), None)
        cfg = self.config_
        loader = DeviceLoader(split, cfg.eval_batch_size, device="cpu", norm=self.normalization_)
        probs = predict_loader(self.module_, loader, tta=cfg.tta, flip=cfg.flips, precision="fp32").probs
        probs = probs.double().numpy()
        return probs / probs.sum(axis=1, keepdims=True)  # float64 rows that sum to 1

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row, as given in y."""
        probs = self.predict_proba(X)  # first: unfitted, it raises NotFittedError
        return self.classes_[probs.argmax(axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (N, H, W) images; (N, C, H, W) too
        return tags


def infer_image_shape(features: int) -> tuple[int, int, int]:
    """(C, H, W) of a flat row: s x s grayscale for s*s values (64: Digits' 8x8), 3 x s x s for 3*s*s,
    else one row of `features` pixels."""
    side = math.isqrt(features)
    if side * side == features:
        return (1, side, side)
    side = math.isqrt(features // 3)
    if features % 3 == 0 and 3 * side * side == features:
        return (3, side, side)
    return (1, 1, features)


_NO_Y = object()


def _validate(est: TinyVisionClassifier, X: Any, y: Any = _NO_Y) -> Any:
    """scikit-learn's checks of X (and y, at fit): finite numbers, at least one row, n_features_in_."""
    if validate_data is None:
        raise TinyVisionError("TinyVisionClassifier needs scikit-learn >= 1.6: pip install -U scikit-learn")
    if y is _NO_Y:
        return validate_data(est, X, reset=False, allow_nd=True)
    return validate_data(est, X, y, allow_nd=True)


def _seed(random_state: Any) -> int:
    """random_state as a run seed: an int as it is, else drawn from the generator it names."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ConfigError(f"random_state must be >= 0 (a run seed), got {random_state}")
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _dataset(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], cfg: RunConfig,
             val_size: Optional[int | float]) -> ImageDataset:
    """The arrays as tinyvision's in-memory dataset. Without val_size every row trains and the loop
    watches the first WATCH rows as its "test" split (val_size=0: no early stopping, last weights)."""
    pixel_max = 255.0 if images.dtype == np.uint8 else max(1.0, float(np.abs(images).max()))
    if val_size is None:
        train, watch = make_split(images, labels, None), make_split(images[:WATCH], labels[:WATCH], None)
        return ImageDataset("arrays", classes, train, watch, watch, pixel_max)
    check_val_size(val_size)
    val_idx, train_idx = carve(len(labels), val_count(val_size, len(labels)), cfg.split_seed, True)
    val = make_split(images, labels, val_idx)
    return ImageDataset("arrays", classes, make_split(images, labels, train_idx), val, val, pixel_max)


def _signature() -> inspect.Signature:
    """__init__'s signature as scikit-learn reads it (get_params, clone, repr): every parameter named."""
    P = inspect.Parameter
    return inspect.Signature([P("self", P.POSITIONAL_OR_KEYWORD), P("model", P.POSITIONAL_OR_KEYWORD, default="digits-mlp"),
                              *(P(name, P.KEYWORD_ONLY, default=d) for name, d in PARAMS.items())])


TinyVisionClassifier.__init__.__signature__ = _signature()  # type: ignore[attr-defined]
