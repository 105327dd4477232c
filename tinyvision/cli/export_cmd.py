"""`tinyvision export RUN --format onnx|pt2|torchscript`: a finished run's model as a file other
programs load, with a JSON beside it saying what to feed it (tinyvision.export)."""
from __future__ import annotations

import argparse

EXPORT_FORMATS = ("onnx", "pt2", "torchscript")  # export.FORMATS' names, here without importing torch


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_run

    model_file, meta = export_run(args.run, args.format, out=args.out)
    size = model_file.stat().st_size
    print(f"{args.format}: {model_file} ({size / 1024:,.1f} KiB); what to feed it: {meta}")
    return 0
