"""What a loaded dataset is (ImageDataset: train/val/test Splits of tensors) and how splits are made:
the validation carve from train, k-fold cross-validation folds, the fixed test hold-out of
folder:/npz: sources."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, DataError

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (x (N,C,H,W), y (N,) int64)
if TYPE_CHECKING:  # torch is imported where splits are made: `tinyvision datasets` runs without it
    import torch

HOLDOUT_SEED = 0  # folder:/npz: test hold-out is the same for every run seed, like a published split


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no truth value to compare with
class Split:
    images: torch.Tensor  # (N,C,H,W) uint8 where the source is uint8, else float32; CPU
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A loaded dataset: its classes and three splits of CPU tensors."""

    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    pixel_max: float = 255.0  # the value of a white pixel in the source (Digits: 16)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # (C,H,W)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def check_val_size(val_size: int | float | None) -> None:
    """ConfigError unless val_size is None, a count >= 0 or a fraction in (0, 1)."""
    if val_size is None:
        return
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise ConfigError(f"val_size must be a count or a fraction in (0, 1), got {val_size!r}")
    if isinstance(val_size, float) and not 0.0 < val_size < 1.0:
        raise ConfigError(f"val_size as a fraction must be in (0, 1), got {val_size}")
    if isinstance(val_size, int) and val_size < 0:
        raise ConfigError(f"val_size as a count must be >= 0 (0: no validation split), got {val_size}")


def val_count(val_size: int | float, n: int) -> int:
    """Validation rows out of n training rows (a fraction rounds, but to at least one)."""
    count = val_size if isinstance(val_size, int) else max(1, round(val_size * n))
    if count >= n:
        raise ConfigError(f"val_size {val_size} leaves no training rows: the train split has {n}")
    return count


def carve(n: int, count: int, seed: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
    """(val indices, train indices): disjoint, each in ascending order, together all of range(n)."""
    if not shuffle:  # fixed split: validation is the last `count` rows
        return np.arange(n - count, n), np.arange(n - count)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:count]), np.sort(perm[count:])


def fold_of(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each row's fold (0 to folds - 1), stratified: the rows shuffled by `seed`, grouped by class
    (stable), then dealt out in turn, so each fold holds every class's rows to within one and the
    fold sizes differ by at most one. A pure function of (labels, folds, seed)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    fold = np.empty(len(labels), dtype=np.int64)
    fold[order] = np.arange(len(labels)) % folds
    return fold


def fold_split(pool: Split, folds: int, fold: int, seed: int) -> tuple[Split, Split]:
    """(train, val) of k-fold cross-validation: fold `fold` of `pool` (train and validation images
    together) validates, the other folds train; each in the pool's order, sharing no memory with it."""
    if len(pool) < folds:
        raise ConfigError(f"cv_folds {folds}: the train and validation splits hold {len(pool)} images, "
                          "fewer than the folds")
    import torch

    where = fold_of(pool.labels.numpy(), folds, seed)
    val, train = (torch.from_numpy(np.flatnonzero(pick)) for pick in (where == fold, where != fold))
    return (Split(pool.images[train], pool.labels[train]), Split(pool.images[val], pool.labels[val]))


def make_split(x: np.ndarray, y: np.ndarray, idx: np.ndarray | None) -> Split:
    """The rows `idx` (None: all) as a Split of writable tensors that share no memory with x, y."""
    if idx is not None:
        x, y = x[idx], y[idx]  # fancy indexing copies: the splits share no memory
    x = x if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    x, y = np.require(x, requirements=("C", "W")), np.require(y, np.int64, ("C", "W"))
    import torch

    return Split(torch.from_numpy(x), torch.from_numpy(y))


def hold_out(x: np.ndarray, y: np.ndarray, path: Path) -> Arrays:
    """20% of the rows as a test split, the same for every run seed."""
    if len(y) < 3:
        raise DataError(f"{path}: expected at least 3 images to split into train/val/test, "
                        f"found {len(y)}")
    test_idx, train_idx = carve(len(y), max(1, round(0.2 * len(y))), HOLDOUT_SEED, True)
    return {"train": (x[train_idx], y[train_idx]), "test": (x[test_idx], y[test_idx])}
