"""What the notebook result objects share: inline figures, DataFrames, text cut to a screen."""
from __future__ import annotations

import html
from typing import Any, Callable, Optional, Sequence

from matplotlib.figure import Figure

from ..errors import TinyVisionError
from ..report.html import data_uri
from ..report.plots import (figure_png)


EXTRA = "pip install 'tinyvision[notebook]'"
DPI = 80  # inline figures: sharp enough, a fraction of the report's bytes
MAX_LINES = 40  # a text repr fits one screen
_CSS = ("<style>.tinyvision td{white-space:nowrap}.tinyvision td.num{text-align:right;font-variant-numeric:tabular-nums}"
        ".tinyvision img{max-width:100%;height:auto}.tinyvision p.note{color:#8a5a00}"
        ".tinyvision .wide{overflow-x:auto}</style>")
_PLOT_ERRORS = (TinyVisionError, OSError, ValueError, KeyError, TypeError)


def _show_figures_inline() -> None:
    """In a Jupyter kernel, a Figure that ends a cell shows as a PNG (what `%matplotlib inline`
    sets up; the report's figures are never pyplot figures, so nothing else registers it)."""
    from ..progress import in_notebook

    if not in_notebook():
        return
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats

        select_figure_formats(get_ipython(), {"png"})
    except (ImportError, ValueError, AttributeError):  # an IPython without it: figures show as text
        pass


_show_figures_inline()


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(f"DataFrames need pandas, an optional extra of tinyvision: {EXTRA}") from None
    return pandas


def _figure_html(make: Callable[[], Figure], what: str) -> str:
    """A figure as an inline <img> (base64 PNG), or a note saying why it is missing."""
    try:
        return f'<img src="{data_uri(figure_png(make(), dpi=DPI))}" alt="{html.escape(what)}">'
    except _PLOT_ERRORS as exc:
        return f'<p class="note">No {html.escape(what)}: {html.escape(str(exc))}</p>'


def _cut(lines: list[str]) -> str:
    if len(lines) > MAX_LINES:
        lines = lines[: MAX_LINES - 1] + [f"... ({len(lines) - MAX_LINES + 1} more lines)"]
    return "\n".join(lines)


def _frame(rows: Sequence[dict[str, Any]], columns: Optional[Sequence[str]] = None, index: Optional[str] = None) -> Any:
    pd = _pandas()
    frame = pd.DataFrame(list(rows), columns=list(columns) if columns is not None else None)
    return frame.set_index(index) if index and index in frame.columns else frame
