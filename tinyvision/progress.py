"""Progress output: a live tqdm bar on a terminal, one plain line per epoch otherwise (CI, logs)."""
from __future__ import annotations

import sys
from typing import Callable, Optional, TextIO

from tqdm import tqdm


def format_epoch(row: dict, epochs: int) -> str:
    return (f"epoch {int(row['epoch'])}/{epochs}  "
            f"train loss {row['train_loss']:.4f} acc {100 * row['train_accuracy']:.2f}%  "
            f"val loss {row['val_loss']:.4f} acc {100 * row['val_accuracy']:.2f}%  "
            f"lr {row['lr']:.2e}  {row['seconds']:.1f}s")


class EpochProgress:
    """Per-step bar (terminal only) and a line at each epoch end; quiet=True prints nothing."""

    def __init__(self, epochs: int, *, stream: Optional[TextIO] = None, quiet: bool = False,
                 prefix: str = "") -> None:
        self.epochs, self.quiet, self.prefix = epochs, quiet, prefix
        self.stream = stream or sys.stderr
        self.live = not quiet and self.stream.isatty()
        self.bar: Optional[tqdm] = None

    def start_epoch(self, epoch: int, steps: int) -> Callable[[], None]:
        if not self.live:
            return lambda: None
        self.bar = tqdm(total=steps, desc=f"{self.prefix}epoch {epoch}/{self.epochs}",
                        leave=False, file=self.stream, unit="batch", dynamic_ncols=True)
        return lambda: self.bar.update(1)

    def end_epoch(self, row: dict) -> None:
        self.close()
        self.message(self.prefix + format_epoch(row, self.epochs))

    def message(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
