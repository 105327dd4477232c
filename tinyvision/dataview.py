"""`show`: a look at a dataset from a notebook, loaded as a run config would load it.

    view = show("digits")                  # or show({"dataset": "folder:photos", "image_size": 64})
    view                                   # in Jupyter: the counts table and the figure; else the table
    view.counts["train"]["3"], view.figure # images per class and split; a matplotlib Figure

The table and the figure are report/dataset.py's (describe, format_description, plot_dataset);
this module only loads the data (report/ never does) and wraps it for display.
"""
from __future__ import annotations

import functools
import html
from typing import Any

from matplotlib.figure import Figure

from .config import RunConfig, make_config
from .data import ImageDataset, load_data
from .errors import ConfigError
from .report.dataset import describe, description_tables, format_description, plot_dataset
from .report.html import data_uri, html_table
from .report.plots import figure_png

DPI = 80  # inline figures, as notebook.py's


class DatasetView:
    """A loaded dataset with its description: repr() is the text table; in Jupyter, an HTML table and
    the figure (training images per class, pixel histograms)."""

    def __init__(self, data: ImageDataset) -> None:
        self.data = data
        self.description = describe(data)

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split: {"train": {class: N}, "val": ..., "test": ...}."""
        return self.description["counts"]

    @property
    def figure(self) -> Figure:
        """A new Figure each time (restyle it, fig.savefig("data.pdf")): report.dataset.plot_dataset."""
        return plot_dataset(self.data)

    @functools.cached_property
    def _png(self) -> bytes:
        return figure_png(self.figure, dpi=DPI)

    def __repr__(self) -> str:
        return format_description(self.description)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if not cycle else "DatasetView(...)")

    def _repr_html_(self) -> str:
        name = html.escape(self.data.name)
        tables = "".join(html_table(t) for t in description_tables(self.description))
        return (f'<div class="tinyvision"><h3>Dataset: {name}</h3>{tables}'
                f'<img src="{data_uri(self._png)}" alt="training images of {name} and pixel histograms"></div>')


def show(name_or_config: str | dict[str, Any] | RunConfig, **fields: Any) -> DatasetView:
    """Load a dataset as a run config would (its split_seed, val_size, train_subset, image_size...)
    and return a DatasetView. name_or_config: a dataset name ("digits", "folder:PATH", "npz:PATH"),
    a dict of RunConfig fields or a RunConfig; further fields as keywords (val_size=0.2)."""
    if isinstance(name_or_config, str):
        values: dict[str, Any] = {"dataset": name_or_config}
    elif isinstance(name_or_config, RunConfig):
        values = name_or_config.model_dump()
    elif isinstance(name_or_config, dict):
        values = dict(name_or_config)
    else:
        raise ConfigError(f"show: expected a dataset name, a dict of config fields or a RunConfig, "
                          f"got {type(name_or_config).__name__}")
    return DatasetView(load_data(make_config(values, **fields)))
