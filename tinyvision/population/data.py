"""Each member's training batches, as its own DeviceLoader would give them, stacked.

Members with different seeds each get their seed's epoch order and augmentation (the loader's own
generators, so member k sees exactly the batches of the single run with its seed): images
[K, B, C, H, W] and labels [K, B]. When every member has the same seed they share one batch,
[B, C, H, W] and [B]: gathered once, and the model's first layer becomes one wide matmul.
"""
from __future__ import annotations

import copy
from typing import Iterator, Sequence

import torch

from ..data.loader import DeviceLoader


class MemberBatches:
    def __init__(self, base: DeviceLoader, seeds: Sequence[int]) -> None:
        self.loaders = []
        for seed in seeds:  # copies share the split's device tensors
            loader = copy.copy(base)
            loader.seed = seed
            self.loaders.append(loader)
        self.shared = len(set(seeds)) == 1

    def __len__(self) -> int:
        return len(self.loaders[0])

    @property
    def device(self) -> torch.device:
        return self.loaders[0].device

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        for loader in self.loaders:
            loader.set_epoch(epoch, start_step)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shared:
            yield from self.loaders[0]
            return
        first = self.loaders[0]
        orders = torch.stack([loader.order() for loader in self.loaders])  # [K, n]: one permutation each
        size = first.batch_size
        for step in range(first.start_step, len(first)):
            idx = orders[:, step * size:(step + 1) * size]
            yield self._images(idx, step), first.labels[idx]
        for loader in self.loaders:
            loader.start_step = 0

    def _images(self, idx: torch.Tensor, step: int) -> torch.Tensor:
        """[K, B, C, H, W]: one gather for a normalised split; per member where augmentation draws
        from the member's own generator."""
        first = self.loaders[0]
        if first.prenormalised:
            k, b = idx.shape
            return first.images.index_select(0, idx.reshape(-1)).reshape(k, b, *first.images.shape[1:])
        return torch.stack([loader.batch(rows, step) for loader, rows in zip(self.loaders, idx)])
