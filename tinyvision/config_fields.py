"""The config fields as people read them: --help-config, the CLI flags' help and the docs' field
reference are all made from RunConfig's own types, bounds, defaults and descriptions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Union

from .config import RunConfig
from .tables import label, to_text


# --help-config sections, as the comments in RunConfig: each runs from its first field to the next
SECTION_STARTS = {"recipe": "recipe", "dataset": "data", "model": "model", "optimizer": "optimisation",
                  "seed": "execution"}


@dataclass(frozen=True)
class FieldDoc:
    """One RunConfig field as people read it: in --help-config and in the CLI flags' help."""

    name: str
    section: str
    type: str  # "int >= 1", "float in (0, 10]", "sgd|adam|adamw or None"
    default: str  # as it would be written in a config file, None as None
    description: str
    choices: tuple[str, ...] = ()  # the allowed values of a Literal field


def field_docs() -> list[FieldDoc]:
    """Every RunConfig field in class order, with its section, type, bounds, default, description."""
    docs, section = [], "recipe"
    for name, info in RunConfig.model_fields.items():
        section = SECTION_STARTS.get(name, section)
        args = getattr(info.annotation, "__args__", ())
        optional = getattr(info.annotation, "__origin__", None) is Union and type(None) in args
        kinds = [a for a in args if a is not type(None)] if optional else [info.annotation]
        kind = " ".join(filter(None, [" or ".join(map(_type_name, kinds)), _bounds(info.metadata)]))
        docs.append(FieldDoc(name, section, kind + " or None" * optional, str(info.get_default(call_default_factory=True)),
                             info.description or "", _choices(info.annotation)))
    return docs


def _type_name(annotation: Any) -> str:
    """int; sgd|adam|adamw for a Literal."""
    if getattr(annotation, "__origin__", None) is Literal:
        return "|".join(map(str, annotation.__args__))
    return getattr(annotation, "__name__", str(annotation))


def _choices(annotation: Any) -> tuple[str, ...]:
    origin, args = getattr(annotation, "__origin__", None), getattr(annotation, "__args__", ())
    if origin is Union:
        return next((c for c in map(_choices, args) if c), ())
    return tuple(map(str, args)) if origin is Literal else ()


def format_field_docs() -> str:
    """The --help-config text: one line per field (section, name, type, default, description)."""
    rows, section = [], None
    for doc in field_docs():
        rows.append({**vars(doc), "section": "" if doc.section == section else doc.section})
        section = doc.section
    columns = [(key, key if key != "name" else "field", label)
               for key in ("section", "name", "type", "default", "description")]
    return to_text(rows, columns)


_SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_BRACKETS = {"ge": "[", "gt": "(", "le": "]", "lt": ")"}


def _bounds(metadata: list[Any]) -> str:
    """pydantic's ge/gt/le/lt constraints as ">= 1" or "in (0, 10]"."""
    found = sorted(((k, getattr(m, k)) for m in metadata for k in _SYMBOLS if hasattr(m, k)),
                   key=lambda kv: kv[0] in ("le", "lt"))  # lower bound first
    if len(found) == 2:
        (low, a), (high, b) = found
        return f"in {_BRACKETS[low]}{_number(a)}, {_number(b)}{_BRACKETS[high]}"
    return " ".join(f"{_SYMBOLS[k]} {_number(v)}" for k, v in found)


def _number(v: Any) -> str:
    """1e-3 as 0.001, 10.0 as 10, 2**63 as 2**63 rather than 19 digits."""
    if isinstance(v, int) and v > 2**20 and v & (v - 1) == 0:
        return f"2**{v.bit_length() - 1}"
    return f"{v:g}" if isinstance(v, float) else str(v)
