"""What tv.lr_find returns: the learning-rate range test's rows and suggestion, a dict that shows
its curve inline in a notebook (the figure lr-find writes as lr_find.png: report/lr_find.py).

    found = tv.lr_find({"dataset": "digits", "model": "digits-cnn", "optimizer": "adam"})
    found                    # in Jupyter: the curve, the suggested lr marked
    found.suggested_lr       # steepest descent of the smoothed loss
    found.rows               # [{step, lr, loss, smoothed_loss}]
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Optional

from matplotlib.figure import Figure

from ..config import RunConfig
from ..report.lr_find import plot_lr_find
from .common import _CSS, _cut, _figure_html, _frame


class LrFindResult(dict):
    """lr-find's result as a dict ({rows, suggested_lr, min_loss_lr, stopped}); `dir`: where its
    files were written (None: nowhere)."""

    def __init__(self, found: dict[str, Any], config: Optional[RunConfig] = None,
                 out_dir: str | Path | None = None) -> None:
        super().__init__(found)
        self.config = config
        self.dir: Optional[Path] = Path(out_dir) if out_dir is not None else None

    @property
    def rows(self) -> list[dict[str, float]]:
        return self.get("rows", [])

    @property
    def suggested_lr(self) -> Optional[float]:
        return self.get("suggested_lr")

    @property
    def min_loss_lr(self) -> Optional[float]:
        return self.get("min_loss_lr")

    @property
    def curve(self) -> Any:
        """The rows as a pandas DataFrame indexed by step."""
        return _frame(self.rows, ["step", "lr", "loss", "smoothed_loss"], index="step")

    def plot(self) -> Figure:
        """The curve (a matplotlib Figure): loss and smoothed loss against lr, the suggestion marked."""
        cfg = self.config
        title = f"lr-find: {cfg.model} on {cfg.dataset}" if cfg is not None else "Learning-rate range test"
        return plot_lr_find(self.rows, self.suggested_lr, self.min_loss_lr, title=title)

    def _summary(self) -> str:
        if self.suggested_lr is None:
            return f"no suggestion: the loss diverged too early ({len(self.rows)} steps); lower min_lr"
        return (f"suggested lr {self.suggested_lr:.2e} (steepest descent; minimum/10: {self.min_loss_lr:.2e}); "
                f"{len(self.rows)} steps, stopped: {self.get('stopped')}")

    def __repr__(self) -> str:
        lines = [f"LrFindResult: {self._summary()}"]
        if self.dir is not None:
            lines.append(f"  dir: {self.dir}")
        lines.append("  .suggested_lr .min_loss_lr .rows .curve .plot()")
        return _cut(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if not cycle else "LrFindResult(...)")

    def _repr_html_(self) -> str:
        parts = [_CSS, '<div class="tinyvision">', "<h3>Learning-rate range test</h3>",
                 f"<p>{html.escape(self._summary())}</p>"]
        if self.dir is not None:
            parts.append(f"<p>{html.escape(str(self.dir))}</p>")
        if self.rows:
            parts.append(_figure_html(self.plot, "lr-find curve"))
        parts.append("</div>")
        return "\n".join(parts)


def lr_find(config: RunConfig | dict, *, min_lr: float = 1e-7, max_lr: float = 10.0, steps: int = 200,
            out_dir: str | Path | None = None, model: Any = None, loss: Any = None) -> LrFindResult:
    """The learning-rate range test of `config` (as `tinyvision lr-find`): the lr raised exponentially
    from min_lr to max_lr over `steps` training steps until the loss diverges. Returns an
    LrFindResult (.suggested_lr, .rows, .plot(); in Jupyter its curve). out_dir: also write
    lr_find.csv, lr_find.json and lr_find.png there. model / loss: Python objects, as tv.train."""
    from ..experiments.lr_find import lr_find as find, write_lr_find
    from ..pipeline import resolve

    (cfg,), source, loss_fn = resolve([config], model, loss)
    found = find(cfg, min_lr=min_lr, max_lr=max_lr, steps=steps, model=source, loss=loss_fn)
    if out_dir is not None:
        write_lr_find(out_dir, found, cfg)
    return LrFindResult(found, cfg, out_dir)
