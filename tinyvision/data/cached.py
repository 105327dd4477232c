"""The dataset a run config asks for, loaded once per process (compare and sweeps share it)."""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Optional

from ..config import RunConfig
from ..errors import ConfigError
from .catalog import load_dataset
from .splits import ImageDataset, Split, fold_split

if TYPE_CHECKING:  # the loader imports torch: `tinyvision datasets` runs without it
    from .loader import Normalization


@functools.lru_cache(maxsize=4)
def _cached_dataset(name: str, data_dir: Optional[str], val_size: Any, split_seed: int,
                    image_size: Optional[int], channels: Optional[int], skip_bad_images: bool) -> ImageDataset:
    return load_dataset(name, data_dir=data_dir, val_size=val_size, seed=split_seed,
                        image_size=image_size, channels=channels, skip_bad_images=skip_bad_images)


def load_data(cfg: RunConfig) -> ImageDataset:
    """The config's dataset with its validation carve (split_seed) and train_subset applied. With
    cv_folds, the train and validation images pooled and split into cv_folds stratified folds
    (splits.fold_of, from split_seed): fold cv_fold validates, the others train; test as it is."""
    if cfg.cv_folds is None:
        data = _cached_dataset(cfg.dataset, cfg.data_dir, cfg.val_size, cfg.split_seed,
                               cfg.image_size, cfg.channels, cfg.skip_bad_images)
    else:
        if cfg.val_size is not None:
            raise ConfigError(f"config field val_size: does not apply with cv_folds (fold cv_fold of the train and "
                              f"validation images validates); leave it unset (got {cfg.val_size})")
        pooled = _cached_dataset(cfg.dataset, cfg.data_dir, 0, cfg.split_seed,  # val_size 0: no carve
                                 cfg.image_size, cfg.channels, cfg.skip_bad_images)
        train, val = fold_split(pooled.train, cfg.cv_folds, cfg.cv_fold, cfg.split_seed)
        data = dataclasses.replace(pooled, train=train, val=val)
    if cfg.train_subset and cfg.train_subset < len(data.train):
        n = cfg.train_subset
        data = dataclasses.replace(data, train=Split(data.train.images[:n], data.train.labels[:n]))
    return data


@functools.lru_cache(maxsize=8)
def _cached_normalization(name: str, data_dir: Optional[str], val_size: Any, split_seed: int,
                          image_size: Optional[int], channels: Optional[int], train_subset: Optional[int],
                          skip_bad_images: bool, cv_folds: Optional[int], cv_fold: Optional[int],
                          threads: int) -> "Normalization":
    from .loader import Normalization

    cfg = RunConfig(dataset=name, data_dir=data_dir, val_size=val_size, split_seed=split_seed,
                    image_size=image_size, channels=channels, train_subset=train_subset,
                    skip_bad_images=skip_bad_images, cv_folds=cv_folds, cv_fold=cv_fold)
    return Normalization.from_split(load_data(cfg).train)


def run_normalization(cfg: RunConfig, data: Optional[ImageDataset] = None) -> "Normalization":
    """The input scaling the config asks for (its `normalize`) on its data (`data`: given by the
    caller instead of the config's dataset). For "dataset", the training split's per-channel
    statistics, computed once per process for every run on the same data (compare, sweeps and
    seeds share them instead of recomputing a pass over the split). Keyed by the thread count too:
    a float64 reduction's last bits follow it, and a run must get the statistics it would compute
    alone (a resume in a fresh process is bit-identical)."""
    import torch

    from .loader import Normalization

    if cfg.normalize != "dataset":
        data = data or load_data(cfg)
        return Normalization.fixed(cfg.normalize, data.input_shape[0], data.pixel_max)
    if data is not None:
        return Normalization.from_split(data.train)

    return _cached_normalization(cfg.dataset, cfg.data_dir, cfg.val_size, cfg.split_seed, cfg.image_size,
                                 cfg.channels, cfg.train_subset, cfg.skip_bad_images, cfg.cv_folds, cfg.cv_fold,
                                 torch.get_num_threads())
