"""What the commands share: the run flags and how a command line becomes a RunConfig."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from ..config import RunConfig, load_config

RUN_FLAGS = {  # flag -> type; each sets the config field of the same name (help: from config.py)
    "dataset": str, "epochs": int, "batch_size": int, "lr": float, "optimizer": str, "schedule": str,
    "weight_decay": float, "patience": int, "seed": int, "device": str, "data_dir": str, "loss": str,
}


def _population(text: str) -> Optional[int]:
    return None if text == "auto" else _positive_int(text)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run_config(args: argparse.Namespace, overrides: Sequence[str]) -> RunConfig:
    fields = {name: getattr(args, name) for name in [*RUN_FLAGS, "model"] if hasattr(args, name)}
    return load_config(args.config, list(overrides), **fields)


def _report(args: argparse.Namespace, path: str | Path) -> None:
    """The HTML/Markdown report at the end of train, compare and run (unless --no-report), and
    TensorBoard event files when asked for."""
    if not getattr(args, "no_report", False):
        from ..report import write_report

        print(f"report: {write_report(path)[0]}")
    if getattr(args, "tensorboard", False):
        from ..report import write_tensorboard

        print(f"tensorboard: {write_tensorboard(path)}")
