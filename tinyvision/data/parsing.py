"""What the file parsers share: one-line reasons from library exceptions, integer labels, and
the bound on what a compressed entry can honestly claim."""
from __future__ import annotations

import re

import numpy as np

from ..errors import DataError

DEFLATE_MAX_RATIO = 1100  # deflate cannot expand more than ~1032:1; anything above is a lie


def could_not_read(exc: BaseException | str) -> str:
    """'could not read it (why)': a one-line reason from a library exception."""
    return f"could not read it ({reason(exc)})"


def reason(exc: BaseException | str) -> str:
    """The exception's text on one line, without Python object reprs (Pillow says "cannot identify
    image file <_io.BytesIO object at 0x...>")."""
    text = re.sub(r"\s*<[^<>]* at 0x[0-9A-Fa-f]+>", "", str(exc))
    return " ".join(text.split()) or type(exc).__name__


def integer_labels(y: np.ndarray, source: str) -> np.ndarray:
    """Integer-valued labels (any int dtype, or floats holding whole numbers) -> int64."""
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise DataError(f"{source}: expected integer class labels, found dtype {y.dtype}")
