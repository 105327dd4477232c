"""Image files and folders of them: Pillow-decoded, resized and converted to (C,H,W) uint8;
root/<class>/<image> folders with every unreadable file named in one message."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .parsing import reason

# image files a folder dataset reads and `predict` accepts (lower case; all decoded by Pillow)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 1 << 26  # 67 MP (a 64 MP photo); more is refused before decoding (memory)
MAX_IMAGE_BYTES = 1 << 28  # 256 MiB per image file, read whole: a chunk's size claim allocates nothing


def is_image_file(path: Path) -> bool:
    """A file name a folder dataset and `predict` read: an IMAGE_SUFFIXES suffix (any case), not
    hidden (macOS "._x.png" resource forks are not images)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


@dataclass
class FolderImages:
    """What load_image_folder read from root/<class>/<image>, and what it left out."""

    x: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1, 1), np.uint8))  # (N, C, size, size)
    y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) int64
    classes: tuple[str, ...] = ()  # sorted class folder names (those with images)
    counts: dict[str, int] = field(default_factory=dict)  # images per class
    resized: int = 0  # images not already size x size
    converted: int = 0  # images not already grayscale (channels 1) / RGB (channels 3)
    bad_images: list[tuple[str, str]] = field(default_factory=list)  # (path under root, why) skipped
    empty_classes: list[str] = field(default_factory=list)  # class folders skipped: no image file
    unreadable_classes: list[str] = field(default_factory=list)  # skipped: no image file could be read
    ignored: list[str] = field(default_factory=list)  # files that are not images (paths under root)


_LISTED = 8  # names per kind of problem in one message; the rest are counted


def listing(names: list[str], shown: int = _LISTED) -> str:
    """'a, b, c' or 'a, b, ... and 12 more': a bounded list of names for a one-line message."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def load_image_folder(root: str | Path, *, size: int, channels: int, skip_bad: bool = False) -> FolderImages:
    """root/<class>/<image file> -> FolderImages: every image resized (bilinear) to size x size and
    converted to grayscale (channels 1) or RGB (channels 3), classes sorted by folder name.

    Image files are `is_image_file` (IMAGE_SUFFIXES, any case, not hidden); other files and
    sub-folders of a class folder are left out and listed in `ignored`; hidden files silently.
    Every unreadable image and every class folder without an image is named in ONE DataError, or,
    with skip_bad, left out and listed in `bad_images` / `empty_classes`."""
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"image_size must be a positive int, got {size!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder with one sub-folder of images per class")
    try:
        entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except OSError as exc:  # no permission to list it
        raise DataError(f"{root}: cannot read the folder ({exc.strerror or exc})") from None
    folders = [p for p in entries if p.is_dir()]
    if not folders:
        raise DataError(f"{root}: expected one sub-folder of images per class, found none")
    found = FolderImages(ignored=[p.name for p in entries if not p.is_dir()])
    xs, ys, classes = [], [], []
    for folder in folders:
        unreadable = len(found.bad_images)
        images = _read_class(folder, root, size, channels, found)
        if not images:
            empty = len(found.bad_images) == unreadable
            (found.empty_classes if empty else found.unreadable_classes).append(folder.name)
            continue
        xs += images
        ys += [len(classes)] * len(images)
        found.counts[folder.name] = len(images)
        classes.append(folder.name)
    _check_folder_problems(root, found, skip_bad)
    found.x, found.y, found.classes = np.stack(xs), np.asarray(ys, dtype=np.int64), tuple(classes)
    return found


def _read_class(folder: Path, root: Path, size: int, channels: int, found: FolderImages) -> list[np.ndarray]:
    """The readable images of one class folder; records the rest in `found`."""
    images = []
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:  # no permission: the class is unreadable, as if none of its images could be read
        found.bad_images.append((folder.name + "/", f"cannot read the folder ({exc.strerror or exc})"))
        return images
    for p in entries:
        name = p.relative_to(root).as_posix()
        if p.name.startswith("."):
            continue  # .DS_Store, macOS "._x.png" forks: never images, not worth a warning
        if not is_image_file(p) or not p.is_file():
            found.ignored.append(name + ("/" if p.is_dir() else ""))
            continue
        try:
            arr, resized, converted = _read_image(p, (size, size), channels, "a PNG/JPEG image")
        except DataError as exc:
            found.bad_images.append((name, str(exc).removeprefix(f"{p}: ").removeprefix("expected a PNG/JPEG image: ")))
            continue
        images.append(arr)
        found.resized += resized
        found.converted += converted
    return images


def _check_folder_problems(root: Path, found: FolderImages, skip_bad: bool) -> None:
    """One DataError naming every unreadable image and empty class folder, unless skip_bad (and
    something readable is left)."""
    bad, empty = found.bad_images, found.empty_classes
    if len(bad) + len(empty) == 1:  # a single problem: its own path first
        what = "" if bad and bad[0][0].endswith("/") else "expected a PNG/JPEG image: "  # a folder
        text = (f"{root / bad[0][0]}: {what}{bad[0][1]}" if bad else
                f"{root / empty[0]}: expected PNG/JPEG images, found none "
                f"(image files end in {', '.join(IMAGE_SUFFIXES)})")
        them = "it"
    elif bad or empty:
        problems = []
        if bad:
            by_reason: dict[str, list[str]] = {}
            for name, why in bad:
                by_reason.setdefault(why, []).append(name)
            listed = "; ".join(f"{listing(names)}: {why}" for why, names in list(by_reason.items())[:3])
            more = f"; {len(by_reason) - 3} more kinds of problem" if len(by_reason) > 3 else ""
            problems.append(f"{len(bad)} unreadable image{'s' * (len(bad) > 1)} ({listed}{more})")
        if empty:
            problems.append(f"{len(empty)} class folder{'s' * (len(empty) > 1)} without a readable image "
                            f"({listing([c + '/' for c in empty])}; image files end in {', '.join(IMAGE_SUFFIXES)})")
        text, them = f"{root}: {' and '.join(problems)}", "them"
    else:
        return
    if not found.counts:
        raise DataError(text)  # nothing readable: skipping cannot help
    if not skip_bad:
        raise DataError(f"{text}; fix or remove {them}, or set skip_bad_images: true to train without {them}")


def read_image_folder(root: str | Path, *, size: int, channels: int
                      ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """root/<class>/<image file> -> x (N,C,size,size) uint8, y int64, class names (sorted).

    load_image_folder without skipping: an unreadable image or an empty class folder is a
    DataError (naming all of them); files that are not `is_image_file` are left out."""
    found = load_image_folder(root, size=size, channels=channels)
    return found.x, found.y, found.classes


def read_image(path: str | Path, shape: tuple[int, int], channels: int, *,
               kind: str = "an image file") -> np.ndarray:
    """An image file -> uint8 (C,H,W) of `shape` (H, W), C 1 (grayscale) or 3 (RGB), bilinear."""
    return _read_image(path, shape, channels, kind)[0]


def _read_image(path: str | Path, shape: tuple[int, int], channels: int, kind: str
                ) -> tuple[np.ndarray, bool, bool]:
    """(read_image's array, whether it was resized, whether its mode was converted)."""
    from PIL import Image  # pillow only for image files

    h, w = shape
    try:
        size = os.stat(path).st_size
        if size > MAX_IMAGE_BYTES:
            raise DataError(f"{path}: expected {kind} of at most {MAX_IMAGE_BYTES} bytes, found {size}")
        # from memory: Pillow's file reads would allocate whatever a damaged chunk length claims
        with Image.open(io.BytesIO(Path(path).read_bytes())) as img:  # reads the header only
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: expected {kind} of at most {MAX_IMAGE_PIXELS} pixels, "
                                f"found {img.width}x{img.height}")
            mode = "L" if channels == 1 else "RGB"
            converted = img.mode != mode
            img = img.convert(mode)  # convert() fully decodes
            resized = img.size != (w, h)
            if resized:
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on damaged files
        raise DataError(f"{path}: expected {kind}: not a readable image ({reason(exc)})") from None
    return (arr[None] if channels == 1 else arr.transpose(2, 0, 1)), resized, converted  # (C,H,W)
