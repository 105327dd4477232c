"""SVHN's MATLAB v5 .mat files -> numpy, their element tags checked before scipy reads them."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import DataError
from .parsing import DEFLATE_MAX_RATIO, could_not_read, integer_labels

_MAT_HEADER = 128  # MATLAB v5: 116 bytes of text, subsystem offset, version, endian "IM"/"MI"
_MAT_PREFIX = 4096  # bytes of each variable read to check its tags (flags, dims, name, data)
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MI_NUMBERS = {1, 2, 3, 4, 5, 6, 7, 9, 12, 13}  # miINT8 ... miUINT64: element types of numbers
_MAT_TYPES = _MI_NUMBERS | {14, 15, 16, 17, 18}  # ... and matrix, compressed, UTF-8/16/32
_MX_NUMERIC = set(range(6, 16))  # array classes double, single, int8 ... uint64


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
        raise DataError(f"{source}: expected {expected}, {could_not_read(exc)}") from None
    x_shape, x_class = found.get("X", (None, None))
    y_shape = found.get("y", (None, None))[0]
    if x_shape is None or len(x_shape) != 4 or x_shape[:3] != (32, 32, 3) or x_class != "uint8":
        raise DataError(f"{source}: expected {expected}, found X {x_shape} {x_class}")
    n = x_shape[3]
    if y_shape not in ((n, 1), (1, n)):
        raise DataError(f"{source}: expected {expected}, found y {y_shape} for {n} images")
    if 32 * 32 * 3 * n > DEFLATE_MAX_RATIO * size:
        raise DataError(f"{source}: expected {expected}, found a header claiming {n} images "
                        f"in a file of {size} bytes")
    try:
        mat = scipy.io.loadmat(source, variable_names=["X", "y"], appendmat=False)
    except Exception as exc:  # truncated data after valid headers
        raise DataError(f"{source}: expected {expected}, {could_not_read(exc)}") from None
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.shape != x_shape or y.shape != (n,):
        raise DataError(f"{source}: expected {expected}, found X {x.shape} {x.dtype}")
    labels = integer_labels(y, source)
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
        raise DataError(f"{source}: expected {expected}, {could_not_read(exc)}") from None
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
