"""Progress output, one kind per place, never two at once:

- a terminal: a live tqdm bar per epoch, and one plain line at each epoch's end;
- a Jupyter or Colab kernel (its stderr is not a terminal, but it shows live output): one bar for
  the whole run, tqdm's notebook widget when ipywidgets is installed, else one text line updated in
  place (carriage returns); the latest epoch's numbers are in the bar, so no epoch lines;
- anything else (CI, logs, a redirected stream): one plain line per epoch.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Sequence, TextIO

from tqdm import tqdm

TERMINAL, NOTEBOOK, LINES = "terminal", "notebook", "lines"


def format_epoch(row: dict, epochs: int, val_name: str = "val") -> str:
    """An epoch's line; val_name "test" when the per-epoch evaluation ran on the test set (val_size=0)."""
    return (f"epoch {int(row['epoch'])}/{epochs}  "
            f"train loss {row['train_loss']:.4f} acc {100 * row['train_accuracy']:.2f}%  "
            f"{short_epoch(row, val_name)}  lr {row['lr']:.2e}  {row['seconds']:.1f}s")


def population_line(epoch: int, epochs: int, members: Sequence[Any], rows: dict[int, dict]) -> str:
    """An epoch of runs trained together: how many trained, and their validation accuracy range."""
    accuracies = [100 * row["val_accuracy"] for row in rows.values()]
    done = sum(m.outcome is not None or m.stopped_early for m in members)
    ended = f", {done} ended" if done else ""
    seconds = max(row["seconds"] for row in rows.values())
    return (f"epoch {epoch}/{epochs}  {len(rows)} of {len(members)} runs{ended}  "
            f"val acc {min(accuracies):.2f}% to {max(accuracies):.2f}%  {seconds:.1f}s each")


def short_epoch(row: dict, val_name: str = "val") -> str:
    """The bar's postfix in a notebook: the latest epoch's validation numbers."""
    return f"{val_name} loss {row['val_loss']:.4f} acc {100 * row['val_accuracy']:.2f}%"


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (Jupyter, JupyterLab, VS Code, Colab): an IPython
    shell with a kernel, not a terminal IPython."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def widgets_available() -> bool:
    """Whether tqdm's notebook bar can draw (it needs ipywidgets)."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def output_mode(stream: TextIO) -> str:
    """TERMINAL, NOTEBOOK or LINES for this stream: a kernel counts only for its own output streams."""
    if stream.isatty():
        return TERMINAL
    if (stream is sys.stderr or stream is sys.stdout) and in_notebook():
        return NOTEBOOK
    return LINES


class EpochProgress:
    """Progress of one run (see the module docstring); quiet=True prints nothing.

    In a notebook, a run inside an experiment (a `prefix` is given) gets a bar that disappears when
    the run ends: the experiment prints one line per finished run instead."""

    def __init__(self, epochs: int, *, stream: Optional[TextIO] = None, quiet: bool = False,
                 prefix: str = "", val_name: str = "val") -> None:
        self.val_name = val_name  # "test" with val_size=0: the lines say what was evaluated
        self.epochs, self.quiet, self.prefix = epochs, quiet, prefix
        self.stream = stream or sys.stderr
        self.mode = LINES if quiet else output_mode(self.stream)
        self.live = not quiet and self.mode == TERMINAL
        self.bar: Optional[tqdm] = None
        self.run_bar: Optional[Any] = None  # the notebook's whole-run bar
        self.last: Optional[dict] = None  # the latest epoch row (notebook: shown in the bar)

    def start_epoch(self, epoch: int, steps: int) -> Callable[[], None]:
        if self.mode == NOTEBOOK:
            bar = self._run_bar(epoch, steps)
            bar.set_description(f"{self.prefix}epoch {epoch}/{self.epochs}", refresh=False)
            return lambda: bar.update(1)
        if not self.live:
            return lambda: None
        self.bar = tqdm(total=steps, desc=f"{self.prefix}epoch {epoch}/{self.epochs}",
                        leave=False, file=self.stream, unit="batch", dynamic_ncols=True)
        return lambda: self.bar.update(1)

    def _run_bar(self, epoch: int, steps: int) -> Any:
        """One bar over every step of the run (epochs x steps), made at its first epoch."""
        if self.run_bar is None:
            options = dict(total=self.epochs * steps, initial=(epoch - 1) * steps, unit="batch",
                           leave=not self.prefix, mininterval=0.25)
            if widgets_available():
                from tqdm.notebook import tqdm as notebook_tqdm

                self.run_bar = notebook_tqdm(**options)
            else:  # one line, rewritten in place with "\r"
                self.run_bar = tqdm(file=self.stream, ncols=110, **options)
            if self.last is not None:
                self.run_bar.set_postfix_str(short_epoch(self.last, self.val_name), refresh=False)
        return self.run_bar

    def end_epoch(self, row: dict) -> None:
        if self.mode == NOTEBOOK:
            self.last = row
            if self.run_bar is not None:
                self.run_bar.set_postfix_str(short_epoch(row, self.val_name))
            return
        self.close()
        self.message(self.prefix + format_epoch(row, self.epochs, self.val_name))

    def message(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.run_bar is not None and self.mode == NOTEBOOK:
            bar, self.run_bar = self.run_bar, None
            if bar.n < bar.total:  # stopped early: a finished run, not a failed (red) bar
                bar.total = bar.n
            if self.last is not None:
                bar.set_description(f"{self.prefix}{int(self.last['epoch'])} epochs", refresh=False)
            bar.refresh()
            bar.close()
