"""Pure parsers: dataset files (IDX, CIFAR-10 binary tar, .npz) -> numpy; SVHN .mat files
(matfile) and image files and folders (images) are re-exported here, so every parser is
importable from this one module.

Every malformed input raises DataError naming the file and what was expected; declared sizes are
checked against the bytes actually there before anything is allocated.
"""
from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable, TypeVar

import numpy as np

from ..errors import DataError
from .images import (IMAGE_SUFFIXES, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, FolderImages, is_image_file, listing,
                     load_image_folder, read_image, read_image_folder)
from .matfile import read_svhn_mat
from .parsing import DEFLATE_MAX_RATIO, could_not_read, integer_labels

__all__ = [
    "GZIP_MAGIC", "IMAGE_SUFFIXES", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "FolderImages", "is_image_file",
    "listing", "load_image_folder", "npz_splits", "parse_idx", "read_cifar10_tar", "read_idx", "read_image",
    "read_image_folder", "read_npz", "read_svhn_mat",
]

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
        raise DataError(f"{source}: expected an IDX file (gzip or plain), {could_not_read(exc)}") from None
    return parse_idx(data, source=source, ndim=ndim)

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
        raise DataError(f"{source}: expected the CIFAR-10 binary tar.gz, {could_not_read(why)}") from None
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
    labels = integer_labels(y, f"{path}[y{suffix}]")
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
        raise DataError(f"{path}: expected an .npz archive, {could_not_read(exc)}") from None


def _npz_array(zf: zipfile.ZipFile, key: str, path: Path) -> np.ndarray:
    """One array of the archive, its header checked against the member's size first."""
    source = f"{path}[{key}]"
    try:
        info = zf.getinfo(key + ".npy")
    except KeyError:
        raise DataError(f"{source}: expected an array {key!r} in the .npz, "
                        f"found {sorted(n.removesuffix('.npy') for n in zf.namelist())}") from None
    if info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 4096:
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

