"""A report as a list of blocks (headings, text, tables, figures, code), rendered to Markdown here
and to HTML in html.py, so both files always say the same thing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

from matplotlib.figure import Figure

from .plots import figure_png

Column = tuple[str, str, Callable[[Any], str]]  # (key, header, formatter), as in tinyvision.tables


def label(value: Any) -> str:
    """Formatter for names (classes, points, layers): always left-aligned, even "3"."""
    return "-" if value is None else str(value)


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str  # plain text; renderers escape it
    note: bool = False  # a warning-style remark (skipped runs, missing files)


@dataclass
class Table:
    columns: Sequence[Column]
    rows: Sequence[dict[str, Any]]
    caption: str = ""

    def cells(self) -> list[list[str]]:
        return [[fmt(row.get(key)) for key, _, fmt in self.columns] for row in self.rows]

    def numeric(self) -> list[bool]:
        """Per column: right-align when every filled cell is a number (never the first or a label column)."""
        cols = list(zip(*self.cells())) or [()] * len(self.columns)
        filled = [[c for c in col if c not in ("", "-")] for col in cols]
        return [i > 0 and fmt is not label and bool(cells) and all(map(is_number, cells))
                for i, ((_, _, fmt), cells) in enumerate(zip(self.columns, filled))]

    @property
    def headers(self) -> list[str]:
        return [header for _, header, _ in self.columns]


@dataclass
class Plot:
    name: str  # file stem under plots/
    png: bytes
    caption: str = ""


@dataclass
class Code:
    text: str


Block = Union[Heading, Text, Table, Plot, Code]


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Document":
        self.blocks.extend(blocks)
        return self

    def plot(self, name: str, fig: Figure, caption: str = "") -> "Document":
        """Render the figure to PNG now (and release it)."""
        return self.add(Plot(name, figure_png(fig), caption))

    @property
    def plots(self) -> list[Plot]:
        return [b for b in self.blocks if isinstance(b, Plot)]


def is_number(cell: str) -> bool:
    """"1,234", "95.20%", "0.12 ± 0.01", "-3e-4": a number with optional grouping, unit or spread."""
    stripped = cell.replace(",", "").replace("%", "").replace("±", "").replace(" ", "")
    return any(c.isdigit() for c in stripped) and all(c.isdigit() or c in ".-+e" for c in stripped)


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_") \
        .replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def markdown_table(table: Table) -> str:
    lines = ["| " + " | ".join(map(_md_escape, table.headers)) + " |",
             "|" + "|".join("---:" if right else ":---" for right in table.numeric()) + "|"]
    lines += ["| " + " | ".join(map(_md_escape, row)) + " |" for row in table.cells()]
    return "\n".join(lines)


def render_markdown(doc: Document, plot_dir: str = "plots") -> str:
    """The document as Markdown; each plot is referenced as plot_dir/NAME.png (written by the caller)."""
    out = [f"# {_md_escape(doc.title)}"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {_md_escape(block.text)}")
        elif isinstance(block, Text):
            out.append(f"> **Note:** {_md_escape(block.text)}" if block.note else _md_escape(block.text))
        elif isinstance(block, Table):
            out.append((f"*{_md_escape(block.caption)}*\n\n" if block.caption else "") + markdown_table(block))
        elif isinstance(block, Plot):
            out.append(f"![{block.name.replace('_', ' ')}]({plot_dir}/{block.name}.png)")
            if block.caption:
                out.append(f"*{_md_escape(block.caption)}*")
        elif isinstance(block, Code):
            fence = "````" if "```" in block.text else "```"
            out.append(f"{fence}\n{block.text.rstrip()}\n{fence}")
    return "\n\n".join(out) + "\n"
