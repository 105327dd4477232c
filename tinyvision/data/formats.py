"""Pure parsers: dataset files (IDX, SVHN .mat, CIFAR-10 binary tar, image folders, .npz) -> numpy.

Every malformed input raises DataError naming the file and what was expected; declared sizes are
checked against the bytes actually there before anything is allocated.
"""
from __future__ import annotations

import gzip
import io
import os
import re
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, TypeVar

import numpy as np

from ..errors import ConfigError, DataError

T = TypeVar("T")
GZIP_MAGIC = b"\x1f\x8b"
# IDX dtype byte -> big-endian numpy dtype (the format's full table; MNIST uses 0x08)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_KINDS = {1: "labels", 3: "images"}
_ANY_IDX = "0x0000TTNN (two zero bytes, type 08-0e, ndim)"
_CHUNK = 1 << 22  # 4 MiB reads: memory follows the bytes really present, not a header's claim
_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte + R, G, B planes
_CIFAR_MAX_RECORDS = 10_000
_CIFAR_MEMBERS = {
    "train": [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)],
    "test": ["cifar-10-batches-bin/test_batch.bin"],
}
_CIFAR_META = "cifar-10-batches-bin/batches.meta.txt"
# image files a folder dataset reads and `predict` accepts (lower case; all decoded by Pillow)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_DEFLATE_MAX_RATIO = 1100  # deflate cannot expand more than ~1032:1; anything above is a lie
MAX_IMAGE_PIXELS = 1 << 26  # 67 MP (a 64 MP photo); more is refused before decoding (memory)
MAX_IMAGE_BYTES = 1 << 28  # 256 MiB per image file, read whole: a chunk's size claim allocates nothing
_MAT_HEADER = 128  # MATLAB v5: 116 bytes of text, subsystem offset, version, endian "IM"/"MI"
_MAT_PREFIX = 4096  # bytes of each variable read to check its tags (flags, dims, name, data)
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MI_NUMBERS = {1, 2, 3, 4, 5, 6, 7, 9, 12, 13}  # miINT8 ... miUINT64: element types of numbers
_MAT_TYPES = _MI_NUMBERS | {14, 15, 16, 17, 18}  # ... and matrix, compressed, UTF-8/16/32
_MX_NUMERIC = set(range(6, 16))  # array classes double, single, int8 ... uint64


# ---------------------------------------------------------------------------------------- IDX


def _idx_header(head: bytes, source: str, ndim: int | None) -> tuple[np.dtype, tuple[int, ...]]:
    """Magic + dims -> (dtype, shape); `head` holds at least the 4 magic bytes."""
    want = f"0x000008{ndim:02x} (uint8 {_IDX_KINDS.get(ndim, f'{ndim}-d array')})" if ndim else ""
    if len(head) < 4:
        raise DataError(f"{source}: expected an IDX file, found only {len(head)} bytes")
    magic = int.from_bytes(head[:4], "big")
    found = f"found 0x{magic:08x}"
    if head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES or head[3] == 0:
        raise DataError(f"{source}: expected IDX magic {want or _ANY_IDX}, {found}")
    if ndim is not None and (head[2] != 0x08 or head[3] != ndim):
        raise DataError(f"{source}: expected IDX magic {want}, {found}")
    n = head[3]
    if len(head) < 4 + 4 * n:
        raise DataError(f"{source}: IDX header truncated: expected {4 + 4 * n} bytes, "
                        f"found {len(head)}")
    shape = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(n))
    return np.dtype(_IDX_DTYPES[head[2]]), shape


def _idx_payload_size(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python ints: no overflow


def parse_idx(data: bytes | bytearray, *, source: str, ndim: int | None = None) -> np.ndarray:
    """IDX bytes -> native-endian array of the header's shape; ndim pins the expected uint8 magic."""
    dtype, shape = _idx_header(bytes(data[:4 + 4 * 255]), source, ndim)
    offset = 4 + 4 * len(shape)
    want = _idx_payload_size(dtype, shape)
    if len(data) - offset != want:
        dims = "x".join(map(str, shape))
        raise DataError(f"{source}: IDX header declares {dims} {dtype.name} ({want} bytes of data), "
                        f"found {len(data) - offset} bytes")
    arr = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    # native byte order; copy read-only buffers (bytes) since torch.from_numpy wants writable
    return arr.astype(dtype.newbyteorder("="), copy=not arr.flags.writeable)


def _read_bounded(f: io.BufferedIOBase, limit: int) -> bytearray:
    """Read at most `limit` bytes in chunks, so a lying header cannot make us allocate its claim."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = f.read(min(_CHUNK, limit - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """An IDX file, gzip-compressed or plain (told apart by the gzip magic, not the name)."""
    path, source = Path(path), str(path)
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw) if compressed else raw
            head = _read_bounded(f, 4)
            if len(head) == 4 and head[:2] == b"\0\0":
                head += _read_bounded(f, 4 * head[3])
            dtype, shape = _idx_header(bytes(head), source, ndim)
            # +1 byte: trailing garbage shows up as a length mismatch in parse_idx
            data = head + _read_bounded(f, _idx_payload_size(dtype, shape) + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{source}: expected an IDX file (gzip or plain), {_why(exc)}") from None
    return parse_idx(data, source=source, ndim=ndim)


def _why(exc: BaseException | str) -> str:
    """A one-line reason from a library exception."""
    return f"could not read it ({_reason(exc)})"


def _reason(exc: BaseException | str) -> str:
    # without Python object reprs: Pillow says "cannot identify image file <_io.BytesIO object at 0x...>"
    text = re.sub(r"\s*<[^<>]* at 0x[0-9A-Fa-f]+>", "", str(exc))
    return " ".join(text.split()) or type(exc).__name__


# ---------------------------------------------------------------------------------------- SVHN


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits (MATLAB v5): X 32x32x3xN uint8, y Nx1 with 10 for digit 0."""
    import scipy.io  # scipy is slow to import; only SVHN needs it

    source = str(path)
    expected = "a MATLAB v5 .mat file with X (32x32x3xN uint8) and y (Nx1)"
    size = _check_mat_v5(source, expected)  # else scipy may read it as v4 and trust its dimensions
    try:
        # whosmat reads only headers: shapes are checked before any array is allocated
        found = {name: (shape, cls) for name, shape, cls in scipy.io.whosmat(source, appendmat=False)}
    except Exception as exc:  # scipy raises many types (ValueError, TypeError, MatReadError...)
        raise DataError(f"{source}: expected {expected}, {_why(exc)}") from None
    x_shape, x_class = found.get("X", (None, None))
    y_shape = found.get("y", (None, None))[0]
    if x_shape is None or len(x_shape) != 4 or x_shape[:3] != (32, 32, 3) or x_class != "uint8":
        raise DataError(f"{source}: expected {expected}, found X {x_shape} {x_class}")
    n = x_shape[3]
    if y_shape not in ((n, 1), (1, n)):
        raise DataError(f"{source}: expected {expected}, found y {y_shape} for {n} images")
    if 32 * 32 * 3 * n > _DEFLATE_MAX_RATIO * size:
        raise DataError(f"{source}: expected {expected}, found a header claiming {n} images "
                        f"in a file of {size} bytes")
    try:
        mat = scipy.io.loadmat(source, variable_names=["X", "y"], appendmat=False)
    except Exception as exc:  # truncated data after valid headers
        raise DataError(f"{source}: expected {expected}, {_why(exc)}") from None
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.shape != x_shape or y.shape != (n,):
        raise DataError(f"{source}: expected {expected}, found X {x.shape} {x.dtype}")
    labels = _integer_labels(y, source)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{source}: expected SVHN labels 1..10, found {labels.min()}..{labels.max()}")
    labels[labels == 10] = 0  # SVHN stores digit 0 as 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels  # (H,W,C,N) -> (N,C,H,W)


def _check_mat_v5(source: str, expected: str) -> int:
    """The file's size, once it is a MATLAB v5 file whose variables' tags scipy can trust.

    scipy reads a file whose first four bytes hold a zero as v4 (and allocates the dimensions its
    header claims), and reads v5 element tags unchecked: an unknown type code or a "small" element
    of more than 4 bytes crashes it (segmentation fault). So each variable's flags, dims, name and
    data tags are checked here first, reading only those few bytes of each.
    """
    try:
        with open(source, "rb") as f:
            head = f.read(_MAT_HEADER)
            size = f.seek(0, io.SEEK_END)
            if len(head) < _MAT_HEADER or 0 in head[:4] or head[126:128] not in (b"IM", b"MI"):
                raise DataError(f"{source}: expected {expected}, found no v5 header ({size} bytes; a v5 "
                                "file opens with text and has 'IM' or 'MI' at byte 126)")
            order = "<" if head[126:128] == b"IM" else ">"
            pos = _MAT_HEADER
            while pos + 8 <= size:
                f.seek(pos)
                kind, length = struct.unpack(order + "II", f.read(8))
                problem = _mat_variable_problem(f, kind, length, size - pos - 8, order)
                if problem:
                    raise DataError(f"{source}: expected {expected}, found {problem} at byte {pos}")
                pos += 8 + length
    except OSError as exc:
        raise DataError(f"{source}: expected {expected}, {_why(exc)}") from None
    return size


def _mat_variable_problem(f: IO[bytes], kind: int, length: int, left: int, order: str) -> str:
    """What is wrong with the variable whose tag was just read ("" if nothing): its first bytes,
    inflated for a compressed one, must hold valid flags, dims, name and data tags."""
    if length > left:
        return f"a variable of {length} bytes where {left} remain"
    if kind == _MI_MATRIX:
        return _mat_tags_problem(f.read(min(length, _MAT_PREFIX)), length, order)
    if kind != _MI_COMPRESSED:
        return f"a top-level element of type {kind}"
    inflate, content = zlib.decompressobj(), b""
    while len(content) < _MAT_PREFIX and length > 0 and not inflate.eof:
        chunk = f.read(min(length, 1 << 16))
        length -= len(chunk)
        try:
            content += inflate.decompress(chunk, _MAT_PREFIX - len(content))
        except zlib.error as exc:
            return f"a compressed variable that does not inflate ({exc})"
        if not chunk:
            break
    if len(content) < 8:
        return "a compressed variable without a matrix inside"
    kind, length = struct.unpack_from(order + "II", content)
    if kind != _MI_MATRIX:
        return f"a compressed element of type {kind}, not a matrix"
    return _mat_tags_problem(content[8:], length, order)


def _mat_tags_problem(content: bytes, length: int, order: str) -> str:
    """Check the tags of a matrix's first bytes: flags, dims, name, then a numeric one's data."""
    pos, tags = 0, []
    while len(tags) < 4 and pos + 8 <= len(content):
        word, n = struct.unpack_from(order + "II", content, pos)
        kind, small = word & 0xFFFF, word >> 16
        if kind not in _MAT_TYPES or small > 4:
            return f"an element tag of type {kind} and {small or n} bytes"
        tags.append((kind, small or n, content[pos + (4 if small else 8):]))
        pos += 8 if small else 8 + n + (-n % 8)
        if pos > length:
            return f"an element of {n} bytes beyond its matrix"
    if len(tags) < 3 or tags[0][0] != 6 or tags[0][1] != 8 or tags[1][0] != 5 or tags[2][0] != 1:
        return "a matrix without its flags, dims and name"
    flags = struct.unpack_from(order + "I", tags[0][2])[0] if len(tags[0][2]) >= 4 else 0
    if flags & 0xFF in _MX_NUMERIC and (flags & 0x800 or (tags[3][0] not in _MI_NUMBERS if len(tags) == 4
                                                          else pos < length)):
        return "a numeric matrix whose data is complex, missing or not numbers"
    return ""


def _integer_labels(y: np.ndarray, source: str) -> np.ndarray:
    """Integer-valued labels (any int dtype, or floats holding whole numbers) -> int64."""
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise DataError(f"{source}: expected integer class labels, found dtype {y.dtype}")


# ---------------------------------------------------------------------------------------- CIFAR


def read_cifar10_tar(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """cifar-10-binary.tar.gz -> {"train": (x, y), "test": (x, y)}; x (N,3,32,32) uint8."""
    source = str(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            classes = _cifar_classes(tar, source)
            out = {split: _cifar_split(tar, names, source) for split, names in _CIFAR_MEMBERS.items()}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        # tarfile's "could not be opened" lists every compression it tried; say it plainly
        why = "not a tar archive" if str(exc).startswith("file could not be opened") else exc
        raise DataError(f"{source}: expected the CIFAR-10 binary tar.gz, {_why(why)}") from None
    for split, (_, y) in out.items():
        if y.size and y.max() >= len(classes):
            raise DataError(f"{source}: {split} label {y.max()} but batches.meta.txt names "
                            f"{len(classes)} classes")
    return out


def _cifar_member(tar: tarfile.TarFile, name: str, source: str) -> bytes:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise DataError(f"{source}: expected member {name} in the CIFAR-10 tar, not found") from None
    limit = _CIFAR_RECORD * _CIFAR_MAX_RECORDS if name.endswith(".bin") else 1 << 16
    if not member.isfile() or member.size > limit:
        raise DataError(f"{source}: expected {name} to be a file of at most {limit} bytes, "
                        f"found {member.size} bytes")
    f = tar.extractfile(member)
    data = f.read() if f is not None else b""
    if len(data) != member.size:
        raise DataError(f"{source}: {name} truncated: expected {member.size} bytes, "
                        f"found {len(data)}")
    return data


def _cifar_classes(tar: tarfile.TarFile, source: str) -> list[str]:
    text = _cifar_member(tar, _CIFAR_META, source).decode("utf-8", errors="replace")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DataError(f"{source}: expected class names in {_CIFAR_META}, found none")
    return names


def _cifar_split(tar: tarfile.TarFile, names: list[str], source: str) -> tuple[np.ndarray, ...]:
    xs, ys = [], []
    for name in names:
        data = _cifar_member(tar, name, source)
        if not data or len(data) % _CIFAR_RECORD:
            raise DataError(f"{source}: {name}: expected records of {_CIFAR_RECORD} bytes "
                            f"(label + 3x32x32 pixels), found {len(data)} bytes")
        records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
        ys.append(records[:, 0].astype(np.int64))
        xs.append(records[:, 1:].reshape(-1, 3, 32, 32))  # R plane, G plane, B plane, row-major
    return np.concatenate(xs), np.concatenate(ys)  # concatenate copies: writable arrays


# ---------------------------------------------------------------------------------------- folders


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
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
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
    for p in sorted(folder.iterdir()):
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
        text = (f"{root / bad[0][0]}: expected a PNG/JPEG image: {bad[0][1]}" if bad else
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
        raise DataError(f"{path}: expected {kind}: not a readable image ({_reason(exc)})") from None
    return (arr[None] if channels == 1 else arr.transpose(2, 0, 1)), resized, converted  # (C,H,W)


# ---------------------------------------------------------------------------------------- npz


def npz_splits(path: str | Path) -> tuple[str, ...]:
    """("train", "test") when the archive holds x_train/y_train/x_test/y_test, else ()."""
    names = set(_npz_open(Path(path), lambda zf: zf.namelist()))
    keys = {f"{k}_{s}.npy" for k in "xy" for s in ("train", "test")}
    return ("train", "test") if keys <= names else ()


def read_npz(path: str | Path, *, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Arrays x, y (or x_<split>, y_<split>) -> x (N,C,H,W) uint8 or float32, y (N,) int64."""
    path = Path(path)
    suffix = f"_{split}" if split else ""
    x, y = _npz_open(path, lambda zf: [_npz_array(zf, k + suffix, path) for k in "xy"])
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}[y{suffix}]: expected labels of shape (N,), found {y.shape}")
    labels = _integer_labels(y, f"{path}[y{suffix}]")
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}[y{suffix}]: expected labels >= 0, found {labels.min()}")
    source = f"{path}[x{suffix}]"
    if x.ndim not in (3, 4) or x.shape[0] != len(labels) or x.dtype.kind not in "biuf":
        raise DataError(f"{source}: expected numeric images (N,H,W), (N,H,W,C) or (N,C,H,W) "
                        f"with N = {len(labels)} labels, found {x.shape} {x.dtype}")
    x = _channels_first(x, source)
    x = x if x.dtype == np.uint8 else x.astype(np.float32)
    return np.ascontiguousarray(x), labels


def _channels_first(x: np.ndarray, source: str) -> np.ndarray:
    """(N,H,W) -> (N,1,H,W); (N,H,W,C) -> (N,C,H,W); (N,C,H,W) kept. C is 1, 3 or 4."""
    if x.ndim == 3:
        return x[:, None]
    if x.shape[1] in (1, 3, 4):
        return x
    if x.shape[3] in (1, 3, 4):
        return x.transpose(0, 3, 1, 2)
    raise DataError(f"{source}: expected 1, 3 or 4 channels first or last, found shape {x.shape}")


def _npz_open(path: Path, use: Callable[[zipfile.ZipFile], T]) -> T:
    try:
        with zipfile.ZipFile(path) as zf:
            return use(zf)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError, NotImplementedError,
            RuntimeError) as exc:  # zipfile: unsupported compression or version, encryption
        raise DataError(f"{path}: expected an .npz archive, {_why(exc)}") from None


def _npz_array(zf: zipfile.ZipFile, key: str, path: Path) -> np.ndarray:
    """One array of the archive, its header checked against the member's size first."""
    source = f"{path}[{key}]"
    try:
        info = zf.getinfo(key + ".npy")
    except KeyError:
        raise DataError(f"{source}: expected an array {key!r} in the .npz, "
                        f"found {sorted(n.removesuffix('.npy') for n in zf.namelist())}") from None
    if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 4096:
        raise DataError(f"{source}: zip entry claims {info.file_size} bytes from "
                        f"{info.compress_size} compressed, more than deflate can hold")
    with zf.open(info) as f:
        shape, dtype = _npy_header(f, source)
        want = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if want != info.file_size - f.tell():
            raise DataError(f"{source}: .npy header declares {shape} {dtype} ({want} bytes), "
                            f"entry holds {info.file_size - f.tell()} bytes")
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _npy_header(f: IO[bytes], source: str) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(f)
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in readers:
        raise DataError(f"{source}: expected .npy format 1.0 or 2.0, found {version}")
    shape, _, dtype = readers[version](f)
    if dtype.hasobject:
        raise DataError(f"{source}: expected a numeric array, found object dtype (pickle)")
    return shape, dtype

