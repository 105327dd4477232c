"""Read YAML from users safely: every bad input gets one line.

`load_yaml` parses text with a SafeLoader that also

* rejects duplicate keys in a mapping (YAML says keys are unique; PyYAML silently keeps the last),
  while merge keys (`<<: *base`) and an explicit key overriding a merged one keep working, with
  the merge spec's precedence (written keys, then the first merged mapping having the key);
* bounds alias expansion: the composed node graph is walked once, memoising each node's expanded
  size by id (an alias is the anchored node object reused), so a "billion laughs" document is
  refused in linear time before anything is constructed; a recursive alias is refused too;
* limits nesting depth, and turns every parse error into one line naming source and line.

`read_yaml_file` adds the file checks (directory, missing, too large, not UTF-8 text) and `clip`
gives a short, bounded text of any value for error messages.
"""
from __future__ import annotations

import reprlib
import stat
from itertools import islice
from pathlib import Path
from typing import Any, Optional

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

try:
    from yaml.cyaml import CParser as _CParser  # libyaml
except ImportError:  # PyYAML built without libyaml
    _CParser = None

from .errors import TinyVisionError

MAX_NODES = 10_000  # values that aliases may add to one document
MAX_BYTES = 1_000_000  # size of a YAML file read by read_yaml_file
MAX_DEPTH = 100  # nesting of sequences/mappings (the composer recurses, so keep it well in range)

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"


class YamlError(TinyVisionError, ValueError):
    """A YAML document or file is unusable; the message is one line starting with its source."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


# --------------------------------------------------------------------------------------- clip


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


# ------------------------------------------------------------------------------------ loading


def _line(node_or_mark: Any) -> Optional[int]:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return mark.line + 1 if mark is not None else None


def _where(source: str, line: Optional[int]) -> str:
    return f"{source} line {line}" if line else source


class _Checks:
    """What both loaders add to SafeLoader: record anchors and alias uses while composing, bound
    the nesting depth, refuse duplicate keys, and give construction errors a line."""

    byte_offsets = False  # whether a ReaderError's position counts bytes (libyaml) or characters

    def _setup(self, source: str) -> None:
        self.source = source
        self.composed = 0  # nodes the composer created (aliases create none)
        self.anchor_names: dict[int, str] = {}  # id(anchored node) -> anchor name
        self.alias_lines: dict[str, int] = {}  # anchor name -> line of its first alias
        self._depth = 0
        self._flattened: set[int] = set()  # ids of mappings checked and merged

    # -- composing (the composer is Python in both loaders)
    def compose_node(self, parent: Optional[Node], index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            self.alias_lines.setdefault(event.anchor, event.start_mark.line + 1)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlError(f"{_where(self.source, _line(event))}: nested more than {MAX_DEPTH} "
                            "levels deep")
        node = super().compose_node(parent, index)
        self._depth -= 1
        self.composed += 1
        if event.anchor is not None:
            self.anchor_names[id(node)] = event.anchor
        return node

    # -- constructing
    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (YamlError, yaml.YAMLError):
            raise
        except (ValueError, OverflowError) as exc:  # e.g. a date such as 2024-02-30
            raise YamlError(f"{_where(self.source, _line(node))}: {_clip_text(str(exc), 150)}") from None

    def flatten_mapping(self, node: MappingNode) -> None:
        """Check the keys written in `node`, then resolve its merge keys (`<<`) in place.

        SafeConstructor.construct_mapping calls this first, and merging calls it on each merged
        mapping before that one is constructed, so every mapping is checked here, before merging
        rewrites it. Replaces PyYAML's version, whose result depends on whether key strings happen
        to be the same object (6.0.2+: `c: {<<: *b}` can take a key of `b` from what `b` merged,
        not `b`'s own value). Here, as the merge spec says: keys written in the mapping win, then
        the first merged mapping that has the key; `node.value` ends with each key once.
        """
        if id(node) in self._flattened:
            return
        self._check_duplicates(node)
        self._flattened.add(id(node))
        pairs: dict[Any, tuple[Node, Node]] = {}
        explicit = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                if key_node.tag == _VALUE_TAG:  # a `=` key is a plain string (as in PyYAML)
                    key_node.tag = "tag:yaml.org,2002:str"
                explicit.append((key_node, value_node))
                continue
            for source in self._merge_sources(node, value_node):
                self.flatten_mapping(source)
                for pair in source.value:
                    pairs.setdefault(self._merge_id(pair[0]), pair)
        if len(explicit) < len(node.value):
            pairs.update((self._merge_id(pair[0]), pair) for pair in explicit)
            node.value = list(pairs.values())

    def _merge_sources(self, node: MappingNode, value_node: Node) -> list[MappingNode]:
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        for source in sources:
            if not isinstance(source, MappingNode):
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       f"expected a mapping or list of mappings for merging, but "
                                       f"found {source.id}", source.start_mark)
        return sources

    def _merge_id(self, key_node: Node) -> Any:
        key = self._key(key_node)
        return object() if key is _UNHASHABLE_KEY else key  # unhashable: PyYAML reports it

    def _check_duplicates(self, node: MappingNode) -> None:
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            key = self._key(key_node)
            if key is _UNHASHABLE_KEY:
                continue  # PyYAML reports unhashable keys itself
            if key in seen:
                raise YamlError(f"{_where(self.source, _line(key_node))}: duplicate key {clip(key, 60)} "
                                f"(first on line {_line(seen[key])})")
            seen[key] = key_node

    def _key(self, key_node: Node) -> Any:
        if not isinstance(key_node, ScalarNode):
            return _UNHASHABLE_KEY
        if key_node.tag == _MERGE_TAG:
            return _MERGE_KEY  # two `<<` keys are duplicates too: write `<<: [*a, *b]`
        if key_node.tag == _VALUE_TAG:
            return "="
        key = self.construct_object(key_node)
        try:
            hash(key)
        except TypeError:
            return _UNHASHABLE_KEY
        return key


class _Loader(_Checks, yaml.SafeLoader):
    """yaml.SafeLoader with the checks: pure Python, used where libyaml is missing."""

    def __init__(self, text: str, source: str) -> None:
        yaml.SafeLoader.__init__(self, text)
        self._setup(source)


if _CParser is not None:
    class _FastLoader(_Checks, Composer, _CParser, SafeConstructor, Resolver):  # type: ignore[misc]
        """The same loader with libyaml scanning and parsing (about 5x faster): CParser only gives
        the events; composing and constructing stay in Python, so the checks are identical."""

        byte_offsets = True

        def __init__(self, text: str, source: str) -> None:
            _CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._setup(source)


_LOADER: type = _FastLoader if _CParser is not None else _Loader


class _Sentinel:
    """A key stand-in for the duplicate check, shown as `text` in messages."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


_UNHASHABLE_KEY = _Sentinel("<unhashable>")
_MERGE_KEY = _Sentinel("'<<'")


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_sizes(loader: Any, root: Node, cap: int) -> dict[int, int]:
    """id(node) -> values the node holds once aliases are expanded (capped at `cap`); iterative,
    each distinct node visited once. Raises YamlError on a recursive alias."""
    sizes: dict[int, int] = {}
    active: set[int] = set()  # nodes whose subtree is being walked
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            sizes[key] = min(cap, 1 + sum(sizes[id(c)] for c in _children(node)))
        elif key in active:
            raise YamlError(_recursive_message(loader, node))
        elif key not in sizes:
            active.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return sizes


def _recursive_message(loader: Any, node: Node) -> str:
    name = loader.anchor_names.get(id(node), "?")[:40]  # anchors are [-_A-Za-z0-9]+
    where = _where(loader.source, loader.alias_lines.get(name) or _line(node))
    return (f"{where}: recursive alias *{name} (the value anchored as &{name} on line "
            f"{_line(node)} contains itself)")


def _check_expansion(loader: Any, root: Node, max_nodes: int) -> None:
    """Refuse a document to which aliases add more than `max_nodes` values."""
    cap = loader.composed + max_nodes + 1
    sizes = _expanded_sizes(loader, root, cap)
    if sizes[id(root)] - loader.composed <= max_nodes:
        return
    used = [(sizes.get(nid, 0), name) for nid, name in loader.anchor_names.items()
            if name in loader.alias_lines]
    _, name = max(used, default=(0, "?"))
    where = _where(loader.source, loader.alias_lines.get(name))
    raise YamlError(f"{where}: expands to more than {max_nodes:,} values through aliases "
                    f"(&anchor/*alias, here *{name[:40]}); "
                    "write the values out")


def _parse_error(exc: yaml.YAMLError, source: str, text: str, byte_offsets: bool) -> YamlError:
    """One line for a PyYAML error: source, line (and column), problem; no quoted context."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = _where(source, _line(mark))
        if mark is not None:
            where += f", column {mark.column + 1}"
        return YamlError(_clip_text(f"{where}: {_problem(exc)}"))
    if isinstance(exc, yaml.reader.ReaderError):
        before = text.encode("utf-8", "replace")[:exc.position] if byte_offsets else text[:exc.position]
        line = before.count(b"\n" if byte_offsets else "\n") + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        return YamlError(f"{_where(source, line)}: unacceptable character {char}: {exc.reason}")
    first = (str(exc).splitlines() or ["invalid YAML"])[0]
    return YamlError(_clip_text(f"{source}: {first}"))


def _problem(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem, with its context when short: "while parsing X" follows the problem,
    a composer's "found duplicate anchor 'a'; first occurrence" leads it."""
    problem, context = exc.problem, exc.context
    if not (problem and context):
        return problem or context or "invalid YAML"
    on_line = f" on line {_line(exc.context_mark)}" if exc.context_mark is not None else ""
    if context.startswith("while "):
        return f"{problem} ({context}{on_line})"
    return f"{context}{on_line}, {problem}"


def _clip_text(text: str, limit: int = 300) -> str:
    """`text` cut to `limit` characters (with "...") for a one-line message."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_yaml(text: str, *, source: str = "<string>", max_nodes: int = MAX_NODES) -> Any:
    """Parse one YAML document safely (SafeLoader types only).

    Raises YamlError (one line starting with `source`) on a parse error, a duplicate key, nesting
    deeper than MAX_DEPTH, a recursive alias, or aliases that would add more than `max_nodes`
    values to the document (checked on the composed graph, before anything is constructed).
    An empty document gives None.
    """
    if not isinstance(text, str):
        raise TypeError(f"load_yaml needs str, got {type(text).__name__} (decode bytes first)")
    loader_class = _LOADER
    try:
        return _load(loader_class, text, source, max_nodes)
    except yaml.YAMLError as exc:
        raise _parse_error(exc, source, text, loader_class.byte_offsets) from None
    except RecursionError:
        raise YamlError(f"{source}: nested too deeply") from None


def _load(loader_class: type, text: str, source: str, max_nodes: int) -> Any:
    loader = loader_class(text, source)  # the pure-Python reader checks characters here
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_expansion(loader, root, max_nodes)
        return loader.construct_document(root)
    finally:
        loader.dispose()


# -------------------------------------------------------------------------------------- files


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise YamlError(f"{path}: no such file") from None
    except OSError as exc:
        raise YamlError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISDIR(info.st_mode):
        raise YamlError(f"{path}: is a directory, expected a YAML file")
    if not stat.S_ISREG(info.st_mode):
        raise YamlError(f"{path}: not a regular file, expected a YAML file")
    if info.st_size > max_bytes:
        raise YamlError(f"{path}: {info.st_size:,} bytes, larger than the {max_bytes:,}-byte limit "
                        "for a YAML file")
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)  # the file may have grown since stat
    except OSError as exc:
        raise YamlError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if len(data) > max_bytes:
        raise YamlError(f"{path}: larger than the {max_bytes:,}-byte limit for a YAML file")
    return data


def _decode(path: Path, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise YamlError(f"{path}: UTF-16 text; save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError(f"{path}: not a text file (UnicodeDecodeError at byte {exc.start})") from None
    nul = text.find("\0")
    if nul >= 0:
        raise YamlError(f"{path}: not a text file (NUL character at byte {len(text[:nul].encode())})")
    return text


def read_yaml_file(path: str | Path, *, max_bytes: int = MAX_BYTES) -> Any:
    """Read and parse a UTF-8 YAML file with `load_yaml` (source = the path).

    Raises YamlError, one line starting with the path, for a directory, a missing or unreadable
    file, a file over `max_bytes`, a file that is not UTF-8 text, and everything load_yaml refuses.
    """
    path = Path(path)
    return load_yaml(_decode(path, _read_bytes(path, max_bytes)), source=str(path))
