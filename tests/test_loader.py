"""The device-resident loader: deterministic, exactly-once per epoch, really shuffled, resumable."""
from __future__ import annotations

import pytest
import torch

from tinyvision.data.catalog import Split
from tinyvision.data.augment import random_translate
from tinyvision.data.loader import DeviceLoader, Normalization, epoch_permutation


def make_split(n: int = 1000) -> Split:
    # each image's pixels encode its own index, so a batch tells which samples it holds
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    return Split(images, torch.arange(n))


def seen_labels(loader: DeviceLoader, epoch: int) -> list[int]:
    loader.set_epoch(epoch)
    return torch.cat([y for _, y in loader]).tolist()


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", devices())
def test_every_sample_exactly_once_per_epoch_and_shuffled(device: str) -> None:
    split = make_split(1000)
    loader = DeviceLoader(split, 64, device=device, norm=Normalization((0.0,), (1.0,)), shuffle=True, seed=3)
    for epoch in range(3):
        order = seen_labels(loader, epoch)
        assert sorted(order) == list(range(1000))  # exactly once, last batch partial
        assert order != list(range(1000))  # really shuffled
    assert seen_labels(loader, 0) != seen_labels(loader, 1)  # a new order every epoch
    assert len(loader) == 16


def test_order_is_a_function_of_seed_and_epoch() -> None:
    split = make_split(500)
    norm = Normalization((0.0,), (1.0,))
    a = DeviceLoader(split, 32, norm=norm, shuffle=True, seed=7)
    b = DeviceLoader(split, 32, norm=norm, shuffle=True, seed=7)
    c = DeviceLoader(split, 32, norm=norm, shuffle=True, seed=8)
    assert seen_labels(a, 4) == seen_labels(b, 4)
    assert seen_labels(a, 4) != seen_labels(c, 4)
    assert torch.equal(epoch_permutation(500, 7, 4), epoch_permutation(500, 7, 4))


def test_images_match_labels_and_are_normalised() -> None:
    split = make_split(300)
    norm = Normalization.from_split(split)
    loader = DeviceLoader(split, 50, norm=norm, shuffle=True, seed=1)
    for x, y in loader:
        assert x.dtype == torch.float32
        expected = ((y % 256).float() - norm.mean[0]) / norm.std[0]
        assert torch.allclose(x[:, 0, 0, 0], expected, atol=1e-5)
    assert loader.prenormalised and loader.images.dtype == torch.float32  # normalised once
    augmented = DeviceLoader(split, 50, norm=norm, shuffle=True, seed=1, augment="translate")
    assert not augmented.prenormalised and augmented.images.dtype == torch.uint8  # shifts raw pixels


@pytest.mark.parametrize("channels_last", [False, True])
def test_prenormalised_batches_equal_per_batch_normalisation(channels_last: bool, monkeypatch) -> None:
    import tinyvision.data.loader as loader_module

    images = torch.randint(0, 256, (300, 3, 6, 6), dtype=torch.uint8)
    split = Split(images, torch.randint(0, 10, (300,)))
    norm = Normalization.from_split(split)
    once = DeviceLoader(split, 64, norm=norm, shuffle=True, seed=2, channels_last=channels_last)
    monkeypatch.setattr(loader_module, "PRENORMALISE_MAX_BYTES", 0)  # too big: per-batch path
    per_batch = DeviceLoader(split, 64, norm=norm, shuffle=True, seed=2, channels_last=channels_last)
    assert once.prenormalised and not per_batch.prenormalised
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for (x1, y1), (x2, y2) in zip(once, per_batch, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)  # bit-identical: resumes do not care
        assert x1.is_contiguous(memory_format=layout)


def test_normalization_statistics_come_from_the_split() -> None:
    images = torch.randint(0, 256, (200, 3, 5, 5), dtype=torch.uint8)
    norm = Normalization.from_split(Split(images, torch.zeros(200, dtype=torch.long)))
    x = images.double()
    assert norm.mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist())
    assert norm.std == pytest.approx(x.std(dim=(0, 2, 3)).tolist())
    out = norm.apply(images)
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (out.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3


def test_resume_mid_epoch_yields_the_remaining_batches() -> None:
    split = make_split(640)
    loader = DeviceLoader(split, 64, norm=Normalization((0.0,), (1.0,)), shuffle=True, seed=5,
                          augment="translate")
    loader.set_epoch(2)
    full = list(loader)
    loader.set_epoch(2, start_step=4)
    rest = list(loader)
    assert len(rest) == len(full) - 4
    for (x1, y1), (x2, y2) in zip(full[4:], rest):
        assert torch.equal(y1, y2) and torch.equal(x1, x2)  # augmentation replays too


def test_ranks_take_disjoint_equal_shards() -> None:
    split = make_split(1001)
    norm = Normalization((0.0,), (1.0,))
    shards = []
    for rank in range(2):
        loader = DeviceLoader(split, 100, norm=norm, shuffle=True, seed=9, rank=rank, world_size=2)
        shards.append(seen_labels(loader, 0))
    assert len(shards[0]) == len(shards[1]) == 500
    assert not set(shards[0]) & set(shards[1])
    whole = epoch_permutation(1001, 9, 0)[:1000].tolist()
    assert sorted(shards[0] + shards[1]) == sorted(whole)


def test_random_translate_moves_images_within_bounds() -> None:
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # a single bright pixel in the centre
    out = random_translate(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    rows, cols = out[:, 0].nonzero(as_tuple=True)[1:]
    assert len(rows) == 64  # the pixel survives every shift of at most 2
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # shifts really vary
