"""Batch-level augmentation on the device: random translation (zero padded) and horizontal flip.

Each call draws its randomness from a generator seeded by the caller, so augmentation is
reproducible and resumable.
"""
from __future__ import annotations

import torch


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def random_translate(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift every image by its own (dy, dx) in [-max_shift, max_shift], filling with zeros."""
    if max_shift == 0:
        return x
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)  # zeros: black when x is raw pixels
    shifts = torch.randint(0, 2 * max_shift + 1, (2, b), device=x.device, generator=generator)
    rows = (torch.arange(h, device=x.device).view(1, h) + shifts[0].view(b, 1))  # (B,H)
    cols = (torch.arange(w, device=x.device).view(1, w) + shifts[1].view(b, 1))  # (B,W)
    batch_idx = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    chan_idx = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch_idx, chan_idx, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images left-right."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def augment_batch(x: torch.Tensor, kind: str, max_shift: int, seed: int) -> torch.Tensor:
    generator = _generator(x.device, seed)
    if kind == "flip-translate":
        x = random_flip(x, generator)
    return random_translate(x, max_shift, generator)
