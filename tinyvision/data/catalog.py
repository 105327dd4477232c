"""The dataset registry (one DatasetInfo entry per dataset) and load_dataset: files -> tensors.

Also the prefix sources `folder:PATH` and `npz:PATH`, and the validation carve shared by all.
A folder dataset says what it found (folder_summary) on the `tinyvision.data.catalog` logger:
INFO for the summary, WARNING for files left out. The CLI shows both on stderr; from Python only
warnings show (logging's default), unless you configure logging.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from ..errors import ConfigError, DataError, UnknownNameError
from ..registry import Registry
from .fetch import RemoteFile, data_root, ensure_files, find_file
from .formats import (IMAGE_SUFFIXES, FolderImages, listing, load_image_folder, npz_splits, read_cifar10_tar,
                      read_idx, read_npz, read_svhn_mat)

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (x (N,C,H,W), y (N,) int64)
if TYPE_CHECKING:  # torch is imported where splits are made: `tinyvision datasets` runs without it
    import torch

_HOLDOUT_SEED = 0  # folder:/npz: test hold-out is the same for every run seed, like a published split
_PREFIXES = ("folder:", "npz:")
FOLDER_IMAGE_SIZE, FOLDER_CHANNELS = 32, 3  # folder: defaults when image_size / channels are None
log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no truth value to compare with
class Split:
    images: torch.Tensor  # (N,C,H,W) uint8 where the source is uint8, else float32; CPU
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True, eq=False)
class ImageDataset:
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


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: what it is, its files, and how to turn them into arrays."""

    name: str
    description: str
    input_shape: tuple[int, int, int]  # (C,H,W)
    classes: tuple[str, ...]
    sizes: Mapping[str, int]  # images per split in the full files ("train" includes validation)
    files: tuple[RemoteFile, ...]
    default_val: int | float  # count, or fraction of train
    load: Callable[[Mapping[str, Path], Mapping[str, Any]], Arrays]  # (paths by name, options)
    source: str  # provenance and licence
    options: Mapping[str, Any] = field(default_factory=dict)  # option -> default
    optional_files: Mapping[str, str] = field(default_factory=dict)  # file name -> option needing it
    shuffle_val: bool = True  # False: validation is the last rows of train (a fixed split)
    pixel_max: float = 255.0  # the value of a white pixel (image files are scaled to it)

    def files_for(self, options: Mapping[str, Any]) -> tuple[RemoteFile, ...]:
        """The files these options need (optional ones only when their option is on)."""
        return tuple(f for f in self.files
                     if f.name not in self.optional_files or options[self.optional_files[f.name]])


DATASETS = Registry[DatasetInfo]("dataset")


def _register(info: DatasetInfo) -> None:
    DATASETS.add(info.name, info)


# ------------------------------------------------------------------------------- loaders


def _load_digits(paths: Mapping[str, Path], options: Mapping[str, Any]) -> Arrays:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    digits = load_digits()
    x = digits.images.astype(np.uint8)[:, None]  # (1797,1,8,8), values 0..16
    y = digits.target.astype(np.int64)
    return {"train": (x[:1350], y[:1350]), "test": (x[1350:], y[1350:])}


def _load_idx(paths: Mapping[str, Path], options: Mapping[str, Any]) -> Arrays:
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = paths[f"{prefix}-images-idx3-ubyte.gz"], paths[f"{prefix}-labels-idx1-ubyte.gz"]
        x, y = read_idx(images, ndim=3), read_idx(labels, ndim=1)
        if len(x) != len(y):
            raise DataError(f"{images}: {len(x)} images but {labels} holds {len(y)} labels")
        out[split] = (x[:, None], y.astype(np.int64))  # (N,28,28) -> (N,1,28,28)
    return out


def _load_svhn(paths: Mapping[str, Path], options: Mapping[str, Any]) -> Arrays:
    train = read_svhn_mat(paths["train_32x32.mat"])
    if options["svhn_extra"]:
        extra = read_svhn_mat(paths["extra_32x32.mat"])
        train = (np.concatenate([train[0], extra[0]]), np.concatenate([train[1], extra[1]]))
    return {"train": train, "test": read_svhn_mat(paths["test_32x32.mat"])}


def _load_cifar10(paths: Mapping[str, Path], options: Mapping[str, Any]) -> Arrays:
    return read_cifar10_tar(paths["cifar-10-binary.tar.gz"])


# ------------------------------------------------------------------------------- entries

_DIGITS = tuple(str(d) for d in range(10))
_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _idx_files(urls: tuple[str, ...], md5s: tuple[str, ...], sha256s: tuple[str, ...]
               ) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, tuple(u + name for u in urls), md5, sha)
                 for name, md5, sha in zip(_IDX_NAMES, md5s, sha256s))


_register(DatasetInfo(
    name="digits", description="UCI handwritten digits, 8x8 grayscale (values 0..16); fixed split",
    input_shape=(1, 8, 8), classes=_DIGITS, sizes={"train": 1350, "test": 447}, files=(),
    default_val=350, load=_load_digits, shuffle_val=False, pixel_max=16.0,
    source="UCI ML optical recognition of handwritten digits, shipped in scikit-learn (CC BY 4.0)"))

_register(DatasetInfo(
    name="mnist", description="MNIST handwritten digits, 28x28 grayscale",
    input_shape=(1, 28, 28), classes=_DIGITS, sizes={"train": 60000, "test": 10000},
    files=_idx_files(_MNIST_URLS, (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"), (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2")),
    default_val=5000, load=_load_idx,
    source="Y. LeCun, C. Cortes, C. Burges (CC BY-SA 3.0)"))

_register(DatasetInfo(
    name="fashion-mnist", description="Fashion-MNIST (Zalando) clothing images, 28x28 grayscale",
    input_shape=(1, 28, 28), sizes={"train": 60000, "test": 10000},
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
             "Bag", "Ankle boot"),
    files=_idx_files(_FASHION_URLS, (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"), (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34")),
    default_val=5000, load=_load_idx, source="Zalando Research (MIT)"))

_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_register(DatasetInfo(
    name="svhn", description="Street View House Numbers, cropped digits, 32x32 RGB",
    input_shape=(3, 32, 32), classes=_DIGITS,
    sizes={"train": 73257, "test": 26032, "extra": 531131},
    files=tuple(RemoteFile(n, (_SVHN_URL + n,), md5) for n, md5 in (
        ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
        ("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"))),
    default_val=0.1, load=_load_svhn, options={"svhn_extra": False},
    optional_files={"extra_32x32.mat": "svhn_extra"},
    source="Netzer et al. 2011, Stanford (non-commercial use)"))

_register(DatasetInfo(
    name="cifar10", description="CIFAR-10 tiny images, 32x32 RGB",
    input_shape=(3, 32, 32), sizes={"train": 50000, "test": 10000},
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"),
    files=(RemoteFile("cifar-10-binary.tar.gz",
                      ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                      "c32a1d4ab5d03f1284b67883e8d87530"),),
    default_val=5000, load=_load_cifar10, source="A. Krizhevsky 2009, University of Toronto"))


# ------------------------------------------------------------------------------- public API


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching a shell-style wildcard (prefix sources not included)."""
    return DATASETS.names(pattern)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry; an unknown name raises UnknownNameError with a did-you-mean hint."""
    return DATASETS.get(name)


def dataset_status(name: str, data_dir: str | Path | None = None) -> dict[str, Any]:
    """One row for `tinyvision datasets`: shape, split sizes (default validation), and per file
    where it belongs and whether it is there (existence only, no hashing)."""
    if name.startswith(_PREFIXES):
        path = Path(name.split(":", 1)[1]).expanduser()
        files = [{"name": path.name, "path": str(path), "present": path.exists(), "optional": False}]
        return {"name": name, "root": str(path), "sizes": {}, "files": files,
                "present": "yes" if path.exists() else "no", "ready": path.exists()}
    info = dataset_info(name)
    folder = data_root(data_dir) / name
    files = [_file_status(folder, f, f.name in info.optional_files) for f in info.files]
    required = [f for f in files if not f["optional"]]
    have = sum(f["present"] for f in required)
    val = _val_count(info.default_val, info.sizes["train"])
    return {"name": name, "input_shape": "x".join(map(str, info.input_shape)),
            "classes": len(info.classes), "train": info.sizes["train"] - val, "val": val,
            "test": info.sizes["test"], "sizes": dict(info.sizes), "root": str(folder),
            "files": files, "present": f"{have}/{len(required)}" if required else "built-in",
            "ready": have == len(required)}


def _file_status(folder: Path, remote: RemoteFile, optional: bool) -> dict[str, Any]:
    found = find_file(folder, remote)
    return {"name": remote.name, "path": str(found or folder / remote.name),
            "present": found is not None, "optional": optional}


def load_dataset(name: str, *, data_dir: str | Path | None = None,
                 val_size: int | float | None = None, seed: int = 0, download: bool = True,
                 image_size: int | None = None, channels: int | None = None,
                 options: Mapping[str, Any] | None = None, skip_bad_images: bool = False) -> ImageDataset:
    """Train/val/test splits of a registered dataset, `folder:PATH` or `npz:PATH`.

    val_size (count or fraction of train; None = the dataset's default) is carved from train by a
    permutation seeded with `seed`; options are per-dataset switches such as {"svhn_extra": True}.

    folder:PATH reads PATH/<class>/<image> (or PATH/train/<class>/... and PATH/test/<class>/...):
    every image is resized (bilinear) to image_size x image_size, default 32, and converted to
    channels 3 (RGB, the default) or 1 (grayscale); without train/ and test/ folders 20% of the
    images are held out as the test split (the same for every seed), and val_size defaults to 10%
    of the rest. Files that are not images (formats.IMAGE_SUFFIXES) are left out with a warning.
    An unreadable image or a class folder without images is an error naming all of them, unless
    skip_bad_images (then they are left out with a warning naming them). What was found (classes,
    images per class, split sizes, input shape, resizing) is logged at INFO (folder_summary).
    """
    _check_val_size(val_size)
    if skip_bad_images and not name.startswith("folder:"):
        raise ConfigError(f"skip_bad_images applies only to folder: datasets, not {name}")
    found: list[FolderImages] = []  # what a folder: dataset read, for its summary
    if name.startswith(_PREFIXES):
        if options:
            raise ConfigError(f"options {sorted(options)} do not apply to {name}")
        arrays, classes = _load_prefixed(name, image_size, channels, skip_bad_images, found)
        default_val, shuffle, pixel_max = 0.1, True, 255.0
    else:
        info = _lookup(name)
        for key, value in (("image_size", image_size), ("channels", channels)):
            if value is not None:
                raise ConfigError(f"{key} applies only to folder: datasets, not {name}")
        opts = _resolve_options(info, options)
        paths = ensure_files(name, info.files_for(opts), data_root(data_dir), download=download)
        arrays, classes = info.load(paths, opts), info.classes
        _check_arrays(name, arrays, info.input_shape, len(classes))
        default_val, shuffle, pixel_max = info.default_val, info.shuffle_val, info.pixel_max
    train_x, train_y = arrays["train"]
    count = _val_count(default_val if val_size is None else val_size, len(train_y))
    val_idx, train_idx = _carve(len(train_y), count, seed, shuffle)
    data = ImageDataset(name, tuple(classes), _split(train_x, train_y, train_idx),
                        _split(train_x, train_y, val_idx), _split(*arrays["test"], None), pixel_max)
    if found:
        _log_folder(data, found, image_size, channels)
    return data


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


def _log_folder(data: ImageDataset, found: list[FolderImages], image_size: int | None,
                channels: int | None) -> None:
    log.info(folder_summary(data, found, image_size, channels))
    ignored = [f"{p}" for part in found for p in part.ignored]
    if ignored:
        log.warning(f"{data.name}: left out {len(ignored)} file{'s' * (len(ignored) > 1)} that "
                    f"{'are' if len(ignored) > 1 else 'is'} not an image ({', '.join(IMAGE_SUFFIXES)}): "
                    f"{listing(ignored)}")
    bad = [f"{name} ({why})" for part in found for name, why in part.bad_images]
    empty = [f"{c}/" for part in found for c in part.empty_classes + part.unreadable_classes]
    parts = []
    if bad:
        parts.append(f"{len(bad)} unreadable image{'s' * (len(bad) > 1)}: {listing(bad, 5)}")
    if empty:
        parts.append(f"{len(empty)} class folder{'s' * (len(empty) > 1)} without a readable image: "
                     f"{listing(empty)}")
    if parts:
        log.warning(f"{data.name}: skip_bad_images left out {'; '.join(parts)}")


def _lookup(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UnknownNameError(DATASETS.unknown_message(name) + ", or folder:PATH, npz:PATH")
    return DATASETS.get(name)


def _resolve_options(info: DatasetInfo, options: Mapping[str, Any] | None) -> dict[str, Any]:
    unknown = sorted(set(options or {}) - set(info.options))
    if unknown:
        valid = ", ".join(info.options) or "none"
        raise ConfigError(f"unknown option {unknown[0]!r} for dataset {info.name}; valid: {valid}")
    return {**info.options, **(options or {})}


def _check_arrays(name: str, arrays: Arrays, shape: tuple[int, ...], num_classes: int) -> None:
    """A file that parses but holds the wrong kind of data (e.g. 32x32 images as mnist)."""
    for split, (x, y) in arrays.items():
        if x.shape[1:] != tuple(shape) or len(x) != len(y):
            raise DataError(f"{name} {split}: expected images {tuple(shape)} with one label each, "
                            f"found {x.shape[1:]} x {len(x)} and {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(f"{name} {split}: expected labels 0..{num_classes - 1}, "
                            f"found {y.min()}..{y.max()}")


# ------------------------------------------------------------------------------- splits


def _check_val_size(val_size: int | float | None) -> None:
    if val_size is None:
        return
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise ConfigError(f"val_size must be a count or a fraction in (0, 1), got {val_size!r}")
    if isinstance(val_size, float) and not 0.0 < val_size < 1.0:
        raise ConfigError(f"val_size as a fraction must be in (0, 1), got {val_size}")
    if isinstance(val_size, int) and val_size < 0:
        raise ConfigError(f"val_size as a count must be >= 0 (0: no validation split), got {val_size}")


def _val_count(val_size: int | float, n: int) -> int:
    count = val_size if isinstance(val_size, int) else max(1, round(val_size * n))
    if count >= n:
        raise ConfigError(f"val_size {val_size} leaves no training rows: the train split has {n}")
    return count


def _carve(n: int, count: int, seed: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
    """(val indices, train indices): disjoint, each in ascending order, together all of range(n)."""
    if not shuffle:  # fixed split: validation is the last `count` rows
        return np.arange(n - count, n), np.arange(n - count)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:count]), np.sort(perm[count:])


def _split(x: np.ndarray, y: np.ndarray, idx: np.ndarray | None) -> Split:
    if idx is not None:
        x, y = x[idx], y[idx]  # fancy indexing copies: the splits share no memory
    x = x if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    x, y = np.require(x, requirements=("C", "W")), np.require(y, np.int64, ("C", "W"))
    import torch

    return Split(torch.from_numpy(x), torch.from_numpy(y))


# ------------------------------------------------------------------------------- prefix sources


def _load_prefixed(name: str, image_size: int | None, channels: int | None, skip_bad: bool,
                   found: list[FolderImages]) -> tuple[Arrays, tuple[str, ...]]:
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
    if (path / "train").is_dir() and (path / "test").is_dir():
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
    return _hold_out(images.x, images.y, path), images.classes


def _load_npz(path: Path) -> tuple[Arrays, tuple[str, ...]]:
    if npz_splits(path):
        arrays = {s: read_npz(path, split=s) for s in ("train", "test")}
        (x, y), (tx, ty) = arrays["train"], arrays["test"]
        if x.shape[1:] != tx.shape[1:]:
            raise DataError(f"{path}: x_train images {x.shape[1:]} but x_test {tx.shape[1:]}")
        if x.dtype != tx.dtype:  # one uint8, one float: keep both as float32
            arrays = {s: (a.astype(np.float32), b) for s, (a, b) in arrays.items()}
    else:
        arrays = _hold_out(*read_npz(path), path)
    num_classes = max(int(y.max()) + 1 if len(y) else 0 for _, y in arrays.values())
    return arrays, tuple(str(c) for c in range(num_classes))


def _hold_out(x: np.ndarray, y: np.ndarray, path: Path) -> Arrays:
    """20% of the rows as a test split, the same for every run seed."""
    if len(y) < 3:
        raise DataError(f"{path}: expected at least 3 images to split into train/val/test, "
                        f"found {len(y)}")
    test_idx, train_idx = _carve(len(y), max(1, round(0.2 * len(y))), _HOLDOUT_SEED, True)
    return {"train": (x[train_idx], y[train_idx]), "test": (x[test_idx], y[test_idx])}
