"""Plain tables for the terminal, Markdown and CSV, from a list of row dicts."""
from __future__ import annotations

import csv
import io
from typing import Any, Callable, Sequence

Column = tuple[str, str, Callable[[Any], str]]  # (key, header, formatter)


def pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def num(v: Any) -> str:
    return "-" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:.4f}"


def secs(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def plain(v: Any) -> str:
    return "-" if v is None else str(v)


def _cells(rows: Sequence[dict], columns: Sequence[Column]) -> list[list[str]]:
    return [[fmt(row.get(key)) for key, _, fmt in columns] for row in rows]


def to_text(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    headers = [h for _, h, _ in columns]
    body = _cells(rows, columns)
    widths = [max(len(r[i]) for r in [headers, *body]) for i in range(len(headers))]
    left = [fmt is plain for _, _, fmt in columns]  # text left, numbers right

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if l else c.rjust(w) for c, w, l in zip(cells, widths, left)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, body)])


def to_markdown(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    headers = [h for _, h, _ in columns]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(":---" if fmt is plain else "---:" for _, _, fmt in columns) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in _cells(rows, columns)]
    return "\n".join(lines)


def to_csv(rows: Sequence[dict], keys: Sequence[str] | None = None) -> str:
    keys = list(keys or (rows[0] if rows else []))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
