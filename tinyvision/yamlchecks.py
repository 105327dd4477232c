"""The checks tinyvision's YAML loaders add to PyYAML's SafeLoader: duplicate keys refused, merge
keys (`<<`) resolved as the merge spec says, nesting depth bounded, and a bound on what aliases
may add, checked on the composed node graph before anything is constructed. yamlfile.load_yaml
uses them; YamlError is the one error they raise."""
from __future__ import annotations

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
from .shortrepr import clip, clip_text

MAX_DEPTH = 100  # nesting of sequences/mappings (the composer recurses, so keep it well in range)

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"


class YamlError(TinyVisionError, ValueError):
    """A YAML document or file is unusable; the message is one line starting with its source."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


def line_of(node_or_mark: Any) -> Optional[int]:
    """The 1-based line of a node or mark (None without one)."""
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return mark.line + 1 if mark is not None else None


def at_line(source: str, line: Optional[int]) -> str:
    """"config.yaml line 3", or the source alone when the line is unknown."""
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
            raise YamlError(f"{at_line(self.source, line_of(event))}: nested more than {MAX_DEPTH} "
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
            raise YamlError(f"{at_line(self.source, line_of(node))}: {clip_text(str(exc), 150)}") from None

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
                raise YamlError(f"{at_line(self.source, line_of(key_node))}: duplicate key {clip(key, 60)} "
                                f"(first on line {line_of(seen[key])})")
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


DEFAULT_LOADER: type = _FastLoader if _CParser is not None else _Loader


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
    where = at_line(loader.source, loader.alias_lines.get(name) or line_of(node))
    return (f"{where}: recursive alias *{name} (the value anchored as &{name} on line "
            f"{line_of(node)} contains itself)")


def check_expansion(loader: Any, root: Node, max_nodes: int) -> None:
    """Refuse a document to which aliases add more than `max_nodes` values."""
    cap = loader.composed + max_nodes + 1
    sizes = _expanded_sizes(loader, root, cap)
    if sizes[id(root)] - loader.composed <= max_nodes:
        return
    used = [(sizes.get(nid, 0), name) for nid, name in loader.anchor_names.items()
            if name in loader.alias_lines]
    _, name = max(used, default=(0, "?"))
    where = at_line(loader.source, loader.alias_lines.get(name))
    raise YamlError(f"{where}: expands to more than {max_nodes:,} values through aliases "
                    f"(&anchor/*alias, here *{name[:40]}); "
                    "write the values out")
