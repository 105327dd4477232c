"""Each member's training batches, as its own DeviceLoader would give them, stacked.

Members with different seeds each get their seed's epoch order and augmentation (the loader's own
generators, so member k sees exactly the batches of the single run with its seed): images
[K, B, C, H, W] and labels [K, B]. Members with the same seed share their batch, gathered once:
when every member has one seed, [B, C, H, W] and [B]; when the members come in consecutive blocks
of one seed each, all of one size (`sizes`: members per block), [G, B, C, H, W] for the G blocks
and labels [K, B]. A stacked model maps its members over the shared batch (training.stacked)
instead of copying it K times.
"""
from __future__ import annotations

import copy
from typing import Iterator, Optional, Sequence

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
        self.sizes = seed_blocks(seeds) if not self.shared else None  # None: a batch per member
        starts = [sum(self.sizes[:g]) for g in range(len(self.sizes))] if self.sizes else range(len(seeds))
        self.sources = [self.loaders[i] for i in starts]  # the loaders that gather: one per block or member

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
        orders = torch.stack([loader.order() for loader in self.sources])  # [G or K, n]: one permutation each
        size = first.batch_size
        repeats = torch.tensor(self.sizes, device=first.device) if self.sizes else None
        for step in range(first.start_step, len(first)):
            idx = orders[:, step * size:(step + 1) * size]
            labels = first.labels[idx]
            yield self._images(idx, step), labels if repeats is None else labels.repeat_interleave(repeats, dim=0)
        for loader in self.loaders:
            loader.start_step = 0

    def _images(self, idx: torch.Tensor, step: int) -> torch.Tensor:
        """[G or K, B, C, H, W]: one gather for a normalised split; per source where augmentation draws
        from the member's own generator."""
        first = self.loaders[0]
        if first.prenormalised:
            k, b = idx.shape
            return first.images.index_select(0, idx.reshape(-1)).reshape(k, b, *first.images.shape[1:])
        return torch.stack([loader.batch(rows, step) for loader, rows in zip(self.sources, idx)])


def seed_blocks(seeds: Sequence[int]) -> Optional[list[int]]:
    """Members per block when the seeds come in consecutive blocks of one seed each, all blocks of
    one size greater than 1 (else None: every member gathers its own batch)."""
    sizes: list[int] = []
    for i, seed in enumerate(seeds):
        if i and seed == seeds[i - 1]:
            sizes[-1] += 1
        else:
            sizes.append(1)
    blocks = [seeds[sum(sizes[:g])] for g in range(len(sizes))]
    return sizes if len(set(blocks)) == len(blocks) and len(set(sizes)) == 1 and len(sizes) < len(seeds) else None
