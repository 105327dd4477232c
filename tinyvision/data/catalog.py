"""The dataset registry (one DatasetInfo entry per dataset) and load_dataset: files -> tensors.

load_dataset also reads the prefix sources `folder:PATH` and `npz:PATH` (sources.py) and makes the
splits (splits.py). A folder dataset says what it found (folder_summary) on the
`tinyvision.data.catalog` logger: INFO for the summary, WARNING for files left out. The CLI shows
both on stderr; from Python only warnings show (logging's default), unless you configure logging.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ConfigError, DataError, UnknownNameError
from ..registry import Registry
from .fetch import RemoteFile, data_root, ensure_files, find_file
from .formats import IMAGE_SUFFIXES, FolderImages, listing, read_cifar10_tar, read_idx, read_svhn_mat
from .sources import FOLDER_CHANNELS, FOLDER_IMAGE_SIZE, PREFIXES, folder_summary, load_prefixed
from .splits import HOLDOUT_SEED, Arrays, ImageDataset, Split, carve, check_val_size, make_split, val_count

__all__ = ["DATASETS", "FOLDER_CHANNELS", "FOLDER_IMAGE_SIZE", "Arrays", "DatasetInfo", "ImageDataset", "Split",
           "dataset_info", "dataset_status", "folder_summary", "list_datasets", "load_dataset"]
_HOLDOUT_SEED, _carve = HOLDOUT_SEED, carve  # the names mistakes.py imports from here (the loader's own split)
log = logging.getLogger(__name__)


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
    folder: str = ""  # the data root's sub-folder holding the files; "" = the name (svhn+extra: svhn's)

    def files_for(self, options: Mapping[str, Any]) -> tuple[RemoteFile, ...]:
        """The files these options need (optional ones only when their option is on)."""
        return tuple(f for f in self.files
                     if f.name not in self.optional_files or options[self.optional_files[f.name]])

    @property
    def files_folder(self) -> str:
        """The sub-folder of the data root where its files are (shared by entries that share files)."""
        return self.folder or self.name



DATASETS = Registry[DatasetInfo]("dataset")


def _register(info: DatasetInfo) -> None:
    DATASETS.add(info.name, info)


# ------------------------------------------------------------------------------- loaders


def _load_digits(paths: Mapping[str, Path], options: Mapping[str, Any]) -> Arrays:
    # The file scikit-learn ships (no download), read as load_digits() reads it but without
    # importing scikit-learn: its import costs ~2.4 s per process, more than a Digits run.
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits dataset ships with scikit-learn: pip install scikit-learn")
    table = np.loadtxt(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz",
                       delimiter=",")
    x = table[:, :-1].astype(np.uint8).reshape(-1, 1, 8, 8)  # (1797,1,8,8), values 0..16
    y = table[:, -1].astype(np.int64)
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


def _load_svhn_extra(paths: Mapping[str, Path], options: Mapping[str, Any]) -> Arrays:
    return _load_svhn(paths, {"svhn_extra": True})


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
_SVHN_FILES = tuple(RemoteFile(n, (_SVHN_URL + n,), md5) for n, md5 in (  # md5s as torchvision's SVHN lists them
    ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    ("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7")))
_SVHN_SIZES = {"train": 73257, "test": 26032, "extra": 531131}
_SVHN_SOURCE = "Netzer et al. 2011, Stanford (non-commercial use)"
_register(DatasetInfo(
    name="svhn", description="Street View House Numbers, cropped digits, 32x32 RGB",
    input_shape=(3, 32, 32), classes=_DIGITS, sizes=_SVHN_SIZES, files=_SVHN_FILES,
    default_val=0.1, load=_load_svhn, options={"svhn_extra": False},
    optional_files={"extra_32x32.mat": "svhn_extra"}, source=_SVHN_SOURCE))

# train + extra as the training split (validation: 10% of both, as svhn); its files are svhn's, in
# svhn's folder, so the two entries never download the same file twice
_register(DatasetInfo(
    name="svhn+extra", description="SVHN, its 531,131 extra digits added to train, 32x32 RGB (1.9 GB of pixels)",
    input_shape=(3, 32, 32), classes=_DIGITS, files=_SVHN_FILES, folder="svhn",
    sizes={"train": _SVHN_SIZES["train"] + _SVHN_SIZES["extra"], "test": _SVHN_SIZES["test"]},
    default_val=0.1, load=_load_svhn_extra, source=_SVHN_SOURCE))

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
    if name.startswith(PREFIXES):
        path = Path(name.split(":", 1)[1]).expanduser()
        files = [{"name": path.name, "path": str(path), "present": path.exists(), "optional": False}]
        return {"name": name, "root": str(path), "sizes": {}, "files": files,
                "present": "yes" if path.exists() else "no", "ready": path.exists()}
    info = dataset_info(name)
    folder = data_root(data_dir) / info.files_folder
    files = [_file_status(folder, f, f.name in info.optional_files) for f in info.files]
    required = [f for f in files if not f["optional"]]
    have = sum(f["present"] for f in required)
    val = val_count(info.default_val, info.sizes["train"])
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
    permutation seeded with `seed`; options are per-dataset switches such as {"svhn_extra": True}
    (from a run config, the same is the dataset `svhn+extra`).

    folder:PATH reads PATH/<class>/<image> (or PATH/train/<class>/... and PATH/test/<class>/...):
    every image is resized (bilinear) to image_size x image_size, default 32, and converted to
    channels 3 (RGB, the default) or 1 (grayscale); without train/ and test/ folders 20% of the
    images are held out as the test split (the same for every seed), and val_size defaults to 10%
    of the rest. Files that are not images (formats.IMAGE_SUFFIXES) are left out with a warning.
    An unreadable image or a class folder without images is an error naming all of them, unless
    skip_bad_images (then they are left out with a warning naming them). What was found (classes,
    images per class, split sizes, input shape, resizing) is logged at INFO (folder_summary).
    """
    check_val_size(val_size)
    if skip_bad_images and not name.startswith("folder:"):
        raise ConfigError(f"skip_bad_images applies only to folder: datasets, not {name}")
    found: list[FolderImages] = []  # what a folder: dataset read, for its summary
    if name.startswith(PREFIXES):
        if options:
            raise ConfigError(f"options {sorted(options)} do not apply to {name}")
        arrays, classes = load_prefixed(name, image_size, channels, skip_bad_images, found)
        default_val, shuffle, pixel_max = 0.1, True, 255.0
    else:
        info = _lookup(name)
        for key, value in (("image_size", image_size), ("channels", channels)):
            if value is not None:
                raise ConfigError(f"{key} applies only to folder: datasets, not {name}")
        opts = _resolve_options(info, options)
        paths = ensure_files(name, info.files_for(opts), data_root(data_dir), download=download,
                             subfolder=info.files_folder)
        arrays, classes = info.load(paths, opts), info.classes
        _check_arrays(name, arrays, info.input_shape, len(classes))
        default_val, shuffle, pixel_max = info.default_val, info.shuffle_val, info.pixel_max
    train_x, train_y = arrays["train"]
    count = val_count(default_val if val_size is None else val_size, len(train_y))
    val_idx, train_idx = carve(len(train_y), count, seed, shuffle)
    data = ImageDataset(name, tuple(classes), make_split(train_x, train_y, train_idx),
                        make_split(train_x, train_y, val_idx), make_split(*arrays["test"], None), pixel_max)
    if found:
        _log_folder(data, found, image_size, channels)
    return data


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

