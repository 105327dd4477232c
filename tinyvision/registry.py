"""Name -> object registries shared by datasets, model presets and recipes (timm-style).

`register` is a decorator, `get` answers an unknown name with the valid ones and a "did you mean"
hint, `names` filters by shell-style wildcard (a plain word matches anywhere in the name).
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UnknownNameError
from .yamlfile import clip

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of entries of one kind (e.g. "dataset", "model")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` (defaults to the function's name)."""

        def add(entry: T) -> T:
            key = name or getattr(entry, "__name__").replace("_", "-")
            self.add(key, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        hint = difflib.get_close_matches(str(name)[:200], list(self._entries), n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        return f"unknown {self.kind} {clip(name, 80)}.{did_you_mean} Valid: {', '.join(self.names())}"

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style wildcard ("cnn-*"); a pattern without wildcard
        characters (*?[) matches by substring, ignoring case ("cnn": every name containing cnn)."""
        if not any(c in pattern for c in "*?["):
            return sorted(n for n in self._entries if pattern.lower() in n.lower())
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
