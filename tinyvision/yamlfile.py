"""Read YAML from users safely: every bad input gets one line.

`load_yaml` parses text with a SafeLoader that also

* rejects duplicate keys in a mapping (YAML says keys are unique; PyYAML silently keeps the last),
  while merge keys (`<<: *base`) and an explicit key overriding a merged one keep working, with
  the merge spec's precedence (written keys, then the first merged mapping having the key);
* bounds alias expansion: the composed node graph is walked once, memoising each node's expanded
  size by id (an alias is the anchored node object reused), so a "billion laughs" document is
  refused in linear time before anything is constructed; a recursive alias is refused too;
* limits nesting depth, and turns every parse error into one line naming source and line.

Those checks live in yamlchecks.py. `read_yaml_file` adds the file checks (directory, missing, too
large, not UTF-8 text); `clip` (shortrepr.py, re-exported here) gives a short, bounded text of any
value for error messages.
"""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from . import yamlchecks
from .shortrepr import clip, clip_text
from .yamlchecks import MAX_DEPTH, YamlError, _CParser, at_line, check_expansion, line_of
from .yamlchecks import _Loader  # noqa: F401 - the loaders, here for tests that run each

if _CParser is not None:  # libyaml
    from .yamlchecks import _FastLoader  # noqa: F401

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "YamlError", "clip", "load_yaml", "read_yaml_file"]

MAX_NODES = 10_000  # values that aliases may add to one document
MAX_BYTES = 1_000_000  # size of a YAML file read by read_yaml_file
_LOADER: type = yamlchecks.DEFAULT_LOADER  # the loader load_yaml uses (tests run each in turn)


def _parse_error(exc: yaml.YAMLError, source: str, text: str, byte_offsets: bool) -> YamlError:
    """One line for a PyYAML error: source, line (and column), problem; no quoted context."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = at_line(source, line_of(mark))
        if mark is not None:
            where += f", column {mark.column + 1}"
        return YamlError(clip_text(f"{where}: {_problem(exc)}"))
    if isinstance(exc, yaml.reader.ReaderError):
        before = text.encode("utf-8", "replace")[:exc.position] if byte_offsets else text[:exc.position]
        line = before.count(b"\n" if byte_offsets else "\n") + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        return YamlError(f"{at_line(source, line)}: unacceptable character {char}: {exc.reason}")
    first = (str(exc).splitlines() or ["invalid YAML"])[0]
    return YamlError(clip_text(f"{source}: {first}"))


def _problem(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem, with its context when short: "while parsing X" follows the problem,
    a composer's "found duplicate anchor 'a'; first occurrence" leads it."""
    problem, context = exc.problem, exc.context
    if not (problem and context):
        return problem or context or "invalid YAML"
    on_line = f" on line {line_of(exc.context_mark)}" if exc.context_mark is not None else ""
    if context.startswith("while "):
        return f"{problem} ({context}{on_line})"
    return f"{context}{on_line}, {problem}"


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
        check_expansion(loader, root, max_nodes)
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
