"""A report as a list of blocks (headings, text, tables, figures, code), rendered to Markdown here
and to HTML in html.py, so both files always say the same thing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, Union

from matplotlib.figure import Figure

from .. import tables
from ..tables import Column, label, md_escape
from .plots import figure_png

__all__ = ["Block", "Code", "Column", "Document", "Heading", "Plot", "Table", "Text", "label",
           "markdown_table", "render_markdown"]


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
        return tables.cells(self.rows, self.columns)

    def numeric(self) -> list[bool]:
        """Per column: whether it is right-aligned (tables.right_aligned)."""
        return tables.right_aligned(self.columns, self.cells())

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


def markdown_table(table: Table) -> str:
    return tables.to_markdown(table.rows, table.columns)


def render_markdown(doc: Document, plot_dir: str = "plots") -> str:
    """The document as Markdown; each plot is referenced as plot_dir/NAME.png (written by the caller)."""
    out = [f"# {md_escape(doc.title)}"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {md_escape(block.text)}")
        elif isinstance(block, Text):
            out.append(f"> **Note:** {md_escape(block.text)}" if block.note else md_escape(block.text))
        elif isinstance(block, Table):
            out.append((f"*{md_escape(block.caption)}*\n\n" if block.caption else "") + markdown_table(block))
        elif isinstance(block, Plot):
            out.append(f"![{block.name.replace('_', ' ')}]({plot_dir}/{block.name}.png)")
            if block.caption:
                out.append(f"*{md_escape(block.caption)}*")
        elif isinstance(block, Code):
            fence = "````" if "```" in block.text else "```"
            out.append(f"{fence}\n{block.text.rstrip()}\n{fence}")
    return "\n\n".join(out) + "\n"
