"""Every table tinyvision prints or writes: rows (dicts) + columns -> terminal text, Markdown or CSV.

A column is (key, header, formatter); the formatter turns a row's value into a cell. Alignment is
one rule for every output: text left, numbers right (see `right_aligned`). A table for the terminal
fits its width by leaving out columns from the right (`fit_columns`): list the essential ones first.
"""
from __future__ import annotations

import csv
import functools
import io
import math
import shutil
from typing import Any, Callable, Sequence, Union

Formatter = Callable[[Any], str]
Column = tuple[str, str, Formatter]  # (key, header, formatter)
DEFAULT_WIDTH = 100  # characters, when the width of the terminal is unknown or output is not a terminal


# -- cells ---------------------------------------------------------------------------------------

def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _cell(fmt: Formatter) -> Formatter:
    """Wrap a formatter so that a missing value (None, NaN) shows as "-"."""
    @functools.wraps(fmt)
    def cell(v: Any) -> str:
        return "-" if _missing(v) else fmt(v)
    return cell


@_cell
def pct(v: Any) -> str:
    """A fraction as a percentage: 0.9523 -> "95.23%"."""
    return f"{100 * v:.2f}%"


@_cell
def num(v: Any) -> str:
    """Integers with thousands separators, other numbers with 4 decimals."""
    return f"{v:,}" if isinstance(v, int) else f"{v:.4f}"


@_cell
def secs(v: Any) -> str:
    return f"{v:.1f}"


@_cell
def sig3(v: Any) -> str:
    """Three significant digits (0.0123, 1.23, 123): times from milliseconds to minutes."""
    return f"{v:.3g}"


@_cell
def yes_no(v: Any) -> str:
    return "yes" if v else "no"


@_cell
def plain(v: Any) -> str:
    """str(); aligned by content (right when every cell of the column is a number)."""
    return str(v)


@_cell
def label(v: Any) -> str:
    """For names (classes, points, layers): like plain, but always left-aligned, even "3"."""
    return str(v)


def dims(shape: Sequence[int]) -> str:
    """A shape as "1x28x28" ("-" for a scalar)."""
    return "x".join(map(str, shape)) or "-"


def mean_pm(fmt: Formatter) -> Formatter:
    """A formatter for a (mean, std) pair: "mean ± std", the mean alone when std is None or NaN
    (a single seed says nothing about spread), "-" without a mean."""
    def show(pair: tuple[Any, Any]) -> str:
        mean, std = pair if pair is not None else (None, None)
        if _missing(mean):
            return "-"
        return fmt(mean) if _missing(std) else f"{fmt(mean)} ± {fmt(std)}"
    return show


def is_number(cell: str) -> bool:
    """"1,234", "95.20%", "0.12 ± 0.01", "-3e-4": a number with optional grouping, unit or spread."""
    stripped = cell.replace(",", "").replace("%", "").replace("±", "").replace(" ", "")
    return any(c.isdigit() for c in stripped) and all(c.isdigit() or c in ".-+e" for c in stripped)


def cells(rows: Sequence[dict], columns: Sequence[Column]) -> list[list[str]]:
    return [[fmt(row.get(key)) for key, _, fmt in columns] for row in rows]


def right_aligned(columns: Sequence[Column], body: Sequence[Sequence[str]]) -> list[bool]:
    """Per column: right-align when every filled cell is a number, never the first or a label column."""
    cols = list(zip(*body)) or [()] * len(columns)
    filled = [[c for c in col if c not in ("", "-")] for col in cols]
    return [i > 0 and fmt is not label and bool(cs) and all(map(is_number, cs))
            for i, ((_, _, fmt), cs) in enumerate(zip(columns, filled))]


# -- renderers -----------------------------------------------------------------------------------

def to_text(rows: Sequence[dict], columns: Sequence[Column], footer: Sequence[dict] = ()) -> str:
    """Aligned columns under a header and a rule; footer rows (totals) follow a second rule."""
    headers = [h for _, h, _ in columns]
    body, foot = cells(rows, columns), cells(footer, columns)
    widths = [max(len(r[i]) for r in [headers, *body, *foot]) for i in range(len(headers))]
    right = right_aligned(columns, [*body, *foot])

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip()

    rule = line(["-" * w for w in widths])
    return "\n".join([line(headers), rule, *map(line, body), *([rule, *map(line, foot)] if foot else [])])


def terminal_width() -> int:
    """Characters per line of the terminal ($COLUMNS, else the terminal's size); DEFAULT_WIDTH when
    standard output is not a terminal (piped, captured) or the size is unknown."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def fit_columns(rows: Sequence[dict], columns: Sequence[Column], width: int, keep: int = 1) -> list[Column]:
    """The longest leading run of `columns` (at least `keep`) whose to_text is at most `width`
    characters wide: columns are left out from the right, so the least essential go first."""
    body = [[h for _, h, _ in columns], *cells(rows, columns)]
    used = -2  # a line is the column widths joined by two spaces
    for i in range(len(columns)):
        used += 2 + max(len(r[i]) for r in body)
        if used > width and i >= keep:
            return list(columns[:i])
    return list(columns)


def md_escape(text: str) -> str:
    """Text that Markdown shows as written, on one line (also safe inside a table cell)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_") \
        .replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def to_markdown(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """A GitHub-flavoured Markdown table, cells escaped."""
    body = cells(rows, columns)
    lines = ["| " + " | ".join(md_escape(h) for _, h, _ in columns) + " |",
             "|" + "|".join("---:" if r else ":---" for r in right_aligned(columns, body)) + "|"]
    lines += ["| " + " | ".join(map(md_escape, row)) + " |" for row in body]
    return "\n".join(lines)


def to_csv(rows: Sequence[dict], keys: Sequence[Union[str, Column]] | None = None) -> str:
    """Raw values (for machines) under their keys; keys may be column tuples (their keys are used).
    Default: the first row's keys."""
    names = [k[0] if isinstance(k, tuple) else k for k in (keys or (rows[0] if rows else []))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
