"""The prefix sources `folder:PATH` (class folders of image files) and `npz:PATH` (arrays x, y or
x_train/y_train/x_test/y_test) -> split arrays and class names, and the one-line summary of what a
folder held."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .formats import npz_splits, read_npz
from .images import FolderImages, listing, load_image_folder
from .splits import Arrays, ImageDataset, hold_out

PREFIXES = ("folder:", "npz:")
FOLDER_IMAGE_SIZE, FOLDER_CHANNELS = 32, 3  # folder: defaults when image_size / channels are None


def load_prefixed(name: str, image_size: int | None, channels: int | None, skip_bad: bool,
                  found: list[FolderImages]) -> tuple[Arrays, tuple[str, ...]]:
    """(split arrays, class names) of `folder:PATH` or `npz:PATH`; what a folder held is appended
    to `found`."""
    kind, _, raw = name.partition(":")
    path = Path(raw).expanduser()
    if not raw:
        raise ConfigError(f"dataset {name!r}: expected {kind}:PATH")
    if kind == "folder":
        return _load_folder(path, image_size or FOLDER_IMAGE_SIZE, channels or FOLDER_CHANNELS, skip_bad, found)
    for key, value in (("image_size", image_size), ("channels", channels)):
        if value is not None:
            raise ConfigError(f"{key} applies only to folder: datasets, not {name}")
    return _load_npz(path)


def _load_folder(path: Path, size: int, channels: int, skip_bad: bool,
                 found: list[FolderImages]) -> tuple[Arrays, tuple[str, ...]]:
    """PATH/train and PATH/test class folders, or PATH's class folders with 20% held out; what
    each read is appended to `found`."""
    try:
        splits = (path / "train").is_dir() and (path / "test").is_dir()
    except OSError as exc:  # no permission to look inside it
        raise DataError(f"{path}: cannot read the folder ({exc.strerror or exc})") from None
    if splits:
        train = load_image_folder(path / "train", size=size, channels=channels, skip_bad=skip_bad)
        test = load_image_folder(path / "test", size=size, channels=channels, skip_bad=skip_bad)
        if test.classes != train.classes:
            raise DataError(f"{path / 'test'}: expected the class folders of train {list(train.classes)}, "
                            f"found {list(test.classes)}")
        for part, sub in ((train, "train/"), (test, "test/")):  # names relative to PATH
            part.ignored = [sub + n for n in part.ignored]
            part.bad_images = [(sub + n, why) for n, why in part.bad_images]
            part.empty_classes = [sub + c for c in part.empty_classes]
            part.unreadable_classes = [sub + c for c in part.unreadable_classes]
        found += [train, test]
        return {"train": (train.x, train.y), "test": (test.x, test.y)}, train.classes
    images = load_image_folder(path, size=size, channels=channels, skip_bad=skip_bad)
    found.append(images)
    return hold_out(images.x, images.y, path), images.classes


def _load_npz(path: Path) -> tuple[Arrays, tuple[str, ...]]:
    if npz_splits(path):
        arrays = {s: read_npz(path, split=s) for s in ("train", "test")}
        (x, y), (tx, ty) = arrays["train"], arrays["test"]
        if x.shape[1:] != tx.shape[1:]:
            raise DataError(f"{path}: x_train images {x.shape[1:]} but x_test {tx.shape[1:]}")
        if x.dtype != tx.dtype:  # one uint8, one float: keep both as float32
            arrays = {s: (a.astype(np.float32), b) for s, (a, b) in arrays.items()}
    else:
        arrays = hold_out(*read_npz(path), path)
    num_classes = max(int(y.max()) + 1 if len(y) else 0 for _, y in arrays.values())
    return arrays, tuple(str(c) for c in range(num_classes))


def folder_summary(data: ImageDataset, found: list[FolderImages], image_size: int | None = None,
                   channels: int | None = None) -> str:
    """One line on a folder: dataset: classes with images per class, split sizes, the input shape
    and how many images were resized / converted (and whether size and channels were defaults)."""
    counts: dict[str, int] = {}
    for part in found:
        for cls, n in part.counts.items():
            counts[cls] = counts.get(cls, 0) + n
    per_class = listing([f"{c} {n}" for c, n in counts.items()], shown=10)
    held_out = "" if len(found) > 1 else " (test: 20% held out)"
    c, h, w = data.input_shape
    total = sum(counts.values())
    resized, converted = sum(p.resized for p in found), sum(p.converted for p in found)
    mode = "grayscale" if c == 1 else "RGB"
    done = [f"{resized} of {total} images resized to {h}x{w}" if resized else f"all {h}x{w} already",
            f"{converted} converted to {mode}" if converted else f"all {mode} already"]
    unset = [k for k, v in (("image_size", image_size), ("channels", channels)) if v is None]
    how = f"defaults; set {'/'.join(unset)} to change" if unset else "as configured"
    return (f"{data.name}: {len(data.classes)} classes ({per_class} images); train {len(data.train)} / "
            f"val {len(data.val)} / test {len(data.test)}{held_out}; input {c}x{h}x{w}: "
            f"{', '.join(done)} ({how})")

