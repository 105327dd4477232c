"""Measure one speed lever at a time on tinyvision's own training loop (quick, extrapolated).

    python -m benchmarks.levers [--steps 200] [--cases lenet,mlp-40-40]

Each variant patches one thing (threads, channels_last, oneDNN, fused optimiser, torch.compile,
the per-step finiteness check) and reports extrapolated epoch seconds; results go in README.md.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any, Iterator

import torch

import tinyvision.pipeline as pipeline
from benchmarks.run import CASES, tinyvision_epoch
from tinyvision import optim


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _optimizer(kind: str):
    def build(model, cfg, fused=False):
        params = list(model.parameters())
        flag = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[kind]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, **flag)
        return torch.optim.Adam(params, lr=cfg.lr, **flag)
    return build


VARIANTS = {
    "default": lambda: contextlib.nullcontext(),
    "threads=1": lambda: {"threads": 1},
    "channels_last": lambda: patched(pipeline, "use_channels_last", lambda device, net: True),
    "mkldnn off": lambda: patched(torch.backends.mkldnn, "enabled", False),
    "optimizer fused": lambda: patched(pipeline, "build_optimizer", _optimizer("fused")),
    "optimizer foreach": lambda: patched(pipeline, "build_optimizer", _optimizer("foreach")),
    "optimizer for-loop": lambda: patched(pipeline, "build_optimizer", _optimizer("for-loop")),
    "compile": lambda: {"compile": True},
}


def finiteness_check_cost(n: int = 2000) -> float:
    """Microseconds per `not torch.isfinite(scalar)` on the CPU (the per-step NaN check)."""
    t = torch.zeros((), dtype=torch.float64)
    start = time.perf_counter()
    for _ in range(n):
        bool(torch.isfinite(t))
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--cases", default="lenet,mlp-40-40")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--data-dir", default="/work/shared/datasets")
    args = p.parse_args()
    print(f"finiteness check: {finiteness_check_cost():.1f} us per step")
    for name in args.cases.split(","):
        for variant in args.variants.split(","):
            ctx = VARIANTS[variant]()
            extra = ctx if isinstance(ctx, dict) else {}
            with (contextlib.nullcontext() if isinstance(ctx, dict) else ctx):
                try:
                    r = tinyvision_epoch({**CASES[name], **extra}, args.data_dir, args.steps, 20)
                    print(f"{name:10} {variant:20} {r['seconds']:7.2f} s/epoch (extrapolated)", flush=True)
                except Exception as exc:  # e.g. no C++ compiler for torch.compile
                    print(f"{name:10} {variant:20} failed: {type(exc).__name__}: {str(exc)[:80]}", flush=True)


if __name__ == "__main__":
    main()
