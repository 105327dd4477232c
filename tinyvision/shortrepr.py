"""Short, bounded text of any value for error messages: `clip` never builds the full repr of a big
or deeply nested value (a 10^7-item list, a huge int), and `clip_text` cuts a message to one line's
worth."""
from __future__ import annotations

import reprlib
from itertools import islice
from typing import Any


class _ShortRepr(reprlib.Repr):
    """reprlib.Repr that never sorts (a 10^7-key dict would be sorted just to show 6 keys), never
    calls repr() on a whole str/bytes/int and treats subclasses of builtins like their base."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxset = self.maxfrozenset = self.maxdeque = 6
        self.maxdict = 6
        self.maxstring = self.maxother = max(limit, 10)
        self.maxlong = 40

    def repr_dict(self, x: dict, level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{" + self.fillvalue + "}"
        pieces = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                  for k, v in islice(x.items(), self.maxdict)]
        if len(x) > self.maxdict:
            pieces.append(self.fillvalue)
        return "{" + ", ".join(pieces) + "}"

    def repr_set(self, x: Any, level: int) -> str:
        return self._repr_iterable(x, level, "{", "}", self.maxset) if x else "set()"

    def repr_frozenset(self, x: Any, level: int) -> str:
        return self._repr_iterable(x, level, "frozenset({", "})", self.maxset) if x else "frozenset()"

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 4 * self.maxlong:  # repr() of a huge int is slow, or refused (3.11+)
            return f"<int of {x.bit_length():,} bits>"
        return super().repr_int(x, level)

    def repr_bytes(self, x: bytes, level: int) -> str:
        s = repr(bytes(x[:self.maxstring]))
        return s if len(x) <= self.maxstring else s[:-1] + self.fillvalue + s[-1]

    def repr_instance(self, x: Any, level: int) -> str:
        for base in (str, dict, list, tuple, set, frozenset, int):  # subclasses: bounded like base
            if isinstance(x, base) and not isinstance(x, bool):
                return getattr(self, "repr_" + base.__name__)(x, level)
        if isinstance(x, (bytes, bytearray)):
            return self.repr_bytes(x, level)
        return super().repr_instance(x, level)


_CONTAINERS = (list, tuple, dict, set, frozenset)


def _is_small(value: Any, budget: int = 500, max_chars: int = 5_000) -> bool:
    """Whether repr(value) is cheap: few nested items, no long strings, no huge ints."""
    stack = [value]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            return False
        if isinstance(item, (str, bytes, bytearray)) and len(item) > max_chars:
            return False
        if isinstance(item, int) and item.bit_length() > 4 * max_chars:
            return False
        if isinstance(item, _CONTAINERS):
            if len(item) > budget:
                return False
            stack.extend(item.items() if isinstance(item, dict) else item)
    return True


def _size_note(value: Any) -> str:
    if isinstance(value, str):
        return f"{len(value):,} characters"
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value):,} bytes"
    if isinstance(value, _CONTAINERS) and len(value) > 6:
        return f"{len(value):,} items"
    return ""


def _cut(text: str, limit: int, note: str) -> str:
    suffix = f" ({note})" if note else ""
    if len(text) + len(suffix) <= limit:
        return text + suffix
    return text[:max(limit - len(suffix) - 3, 10)] + "..." + suffix


def clip(value: Any, limit: int = 100) -> str:
    """A short repr of any value for an error message: about `limit` characters at most, with the
    full size noted when cut (e.g. "['x', 'x', 'x', ...] (10,000,000 items)"). Never builds the
    full repr of a big or deeply nested value."""
    if _is_small(value):
        try:
            text = repr(value)
        except Exception:  # a broken __repr__ must not hide the error being reported
            text = f"<{type(value).__name__} object>"
        return text if len(text) <= limit else _cut(text, limit, f"{len(text):,} characters")
    text = _ShortRepr(limit).repr(value)
    return _cut(text, limit, _size_note(value))


def clip_text(text: str, limit: int = 300) -> str:
    """`text` cut to `limit` characters (with "...") for a one-line message."""
    return text if len(text) <= limit else text[:limit - 3] + "..."
