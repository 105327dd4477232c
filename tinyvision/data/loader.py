"""The device-resident loader: a split is one tensor on the training device.

An epoch is a permutation of indices drawn from (seed, epoch); batches are gathered by index and
normalised (and optionally augmented) on the device, whole batches at a time. No per-sample Python,
no worker processes. Because the order is a pure function of (seed, epoch, step), a resumed run
sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..errors import ConfigError, DataError
from .augment import augment_batch
from .splits import Split

_MIX = 1_000_003  # spreads (seed, epoch, step) over distinct generator seeds
PRENORMALISE_MAX_BYTES = 1 << 30  # a float32 copy of a split up to this size is made once (MNIST: 172 MB)


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std in raw pixel units, computed from the training split."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_split(cls, split: Split) -> "Normalization":
        """Per-channel mean and sample std of the split. uint8 images (every built-in dataset): from
        each channel's counts of the 256 values, exact and the same on any thread count, ~10x
        faster than a float64 pass over the pixels (MNIST: 0.07 s, not 0.8 s); others in float64."""
        if split.images.dtype == torch.uint8:
            return cls.from_counts([torch.bincount(split.images[:, c].reshape(-1), minlength=256)
                                    for c in range(split.images.shape[1])])
        x = split.images.to(torch.float64)  # float64: exact sums over 60k images
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    @classmethod
    def from_counts(cls, counts: list[torch.Tensor]) -> "Normalization":
        """From each channel's value counts (counts[c][v]: pixels of value v)."""
        values = torch.arange(256, dtype=torch.float64)
        means, stds = [], []
        for count in counts:
            count = count.to(torch.float64)
            n = count.sum()
            mean = (count * values).sum() / n
            var = (count * (values - mean) ** 2).sum() / (n - 1)
            means.append(float(mean))
            stds.append(max(float(var.sqrt()), 1e-6))
        return cls(tuple(means), tuple(stds))

    @classmethod
    def fixed(cls, mode: str | Any, channels: int, pixel_max: float) -> "Normalization":
        """The config's normalize when it is not "dataset": "none" (values as stored), "unit"
        (x / pixel_max) or fixed statistics given in [0, 1] units (one value, or one per channel)."""
        if mode == "none":
            return cls((0.0,) * channels, (1.0,) * channels)
        if mode == "unit":
            return cls((0.0,) * channels, (float(pixel_max),) * channels)
        mean, std = tuple(mode.mean), tuple(mode.std)
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, channels):
                raise ConfigError(f"config field 'normalize': {name} has {len(values)} values; the images have "
                                  f"{channels} channel{'s' * (channels > 1)} (give 1 or {channels})")
        mean, std = (v * channels if len(v) == 1 else v for v in (mean, std))
        return cls(tuple(m * pixel_max for m in mean), tuple(s * pixel_max for s in std))

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/float (B,C,H,W) -> float32 normalised, on the images' device."""
        scale, shift = _affine(self.mean, self.std, images.device)  # cached: no per-batch tensors
        return torch.addcmul(shift, images.to(torch.float32), scale)


@functools.lru_cache(maxsize=32)
def _affine(mean: tuple[float, ...], std: tuple[float, ...],
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of shape (1,C,1,1) with x_norm = x * scale + shift, made once per device."""
    shape = (1, len(mean), 1, 1)
    scale = torch.tensor([1.0 / s for s in std], device=device).view(shape)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=device).view(shape)
    return scale, shift


def normalise_split(images: torch.Tensor, norm: Normalization, device: torch.device,
                    channels_last: bool, chunk: int = 4096) -> torch.Tensor:
    """The whole split as normalised float32 on `device`, converted a chunk at a time (the values
    are the ones Normalization.apply gives batch by batch)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(images.shape, dtype=torch.float32, device=device, memory_format=fmt)
    for start in range(0, len(images), chunk):
        out[start:start + chunk] = norm.apply(images[start:start + chunk].to(device))
    return out


def check_fits(nbytes: int, device: torch.device, headroom: float = 0.8) -> None:
    """Refuse, with the figures, to put a split of `nbytes` on a GPU with less free memory than that
    (leaving 1 - headroom of it for the model and activations); other devices are not checked."""
    if device.type != "cuda":
        return
    free, total = torch.cuda.mem_get_info(device)
    if nbytes > headroom * free:
        raise DataError(f"the split needs {nbytes / 2**30:.2f} GiB on {device} but only {free / 2**30:.2f} GiB of "
                        f"{total / 2**30:.2f} GiB is free; use device=cpu, a smaller dataset or free the GPU")


def epoch_seed(seed: int, epoch: int, step: int = 0) -> int:
    return (seed * _MIX * _MIX + epoch * _MIX + step) % (2**63 - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of epoch `epoch`: a permutation of range(n) fixed by (seed, epoch)."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=generator)


class DeviceLoader:
    """Iterates (normalised images, labels) batches of one split held on `device`.

    shuffle=False gives the split in order (evaluation). With world_size > 1 each rank takes
    every world_size-th index of the epoch permutation (its shard), all ranks the same count.
    """

    def __init__(self, split: Split, batch_size: int, *, device: torch.device | str = "cpu",
                 norm: Normalization, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, augment: str = "none", translate: int = 2,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        self.device = torch.device(device)
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.norm = norm
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.augment, self.translate = augment, translate
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start_step = 0  # first batch to yield (resume mid-epoch)
        # Without augmentation a batch is a gather from the split normalised once (airbench-style):
        # 1 op per batch instead of 3. Augmentation shifts raw pixels, so it keeps the uint8 split.
        self.prenormalised = augment == "none" and split.images.numel() * 4 <= PRENORMALISE_MAX_BYTES
        check_fits(split.images.numel() * (4 if self.prenormalised else split.images.element_size())
                   + split.labels.numel() * split.labels.element_size(), self.device)
        self.images = normalise_split(split.images, norm, self.device, channels_last) \
            if self.prenormalised else split.images.to(self.device)  # uint8 stays uint8

    def __len__(self) -> int:
        n = self.samples_per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def samples_per_rank(self) -> int:
        return len(self.labels) // self.world_size

    def in_order(self, batch_size: int) -> "DeviceLoader":
        """The same split (sharing its device tensors) in order, unaugmented, whole (every rank):
        for evaluating the training set (eval_before)."""
        view = copy.copy(self)
        view.batch_size, view.shuffle, view.augment, view.drop_last = batch_size, False, "none", False
        view.rank, view.world_size, view.epoch, view.start_step = 0, 1, 0, 0
        return view

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def order(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, on the device."""
        n = len(self.labels)
        idx = epoch_permutation(n, self.seed, self.epoch) if self.shuffle else torch.arange(n)
        idx = idx[: self.samples_per_rank() * self.world_size][self.rank :: self.world_size]
        return idx.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        for step in range(self.start_step, len(self)):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield self.batch(idx, step), self.labels.index_select(0, idx)
        self.start_step = 0

    def batch(self, idx: torch.Tensor, step: int) -> torch.Tensor:
        x = self.images.index_select(0, idx)  # (B,C,H,W): normalised float32, or raw uint8 to augment
        if self.prenormalised:
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        if self.augment != "none":
            # shifted in raw pixels, so the border fills with 0 = background, not the mean
            seed = epoch_seed(self.seed, self.epoch, step + 1)
            x = augment_batch(x, self.augment, self.translate, seed)
        x = self.norm.apply(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
