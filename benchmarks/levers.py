"""Measure one speed lever at a time on tinyvision's own training loop (quick, extrapolated).

    python -m benchmarks.levers [--steps 200] [--cases lenet,mlp-40-40]

Each variant changes one thing against the defaults (threads, channels_last, oneDNN, optimiser
kernels, optimizer.step() instead of FusedStep, torch.compile, precision, layer order, whole-split
normalisation) and reports extrapolated epoch seconds; results go in benchmarks/README.md.
Variants alternate over --rounds rounds and the best of each is kept, since a shared machine's
load moves every single number.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import time
from typing import Any, Iterator

import torch

import tinyvision.data.loader as loader_module
import tinyvision.models.build as model_build
from benchmarks.run import CASES, tinyvision_epoch

build_module = importlib.import_module("tinyvision.training.build")  # the modules, not same-named functions
single_module = importlib.import_module("tinyvision.training.single")


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


class OptimizerStep:
    """What the loop did before FusedStep: optimizer.zero_grad() and optimizer.step()."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self) -> None:
        self.optimizer.step()


VARIANTS = {
    "default": lambda: contextlib.nullcontext(),
    "threads=1": lambda: {"threads": 1},
    "NCHW (no channels_last)": lambda: {"channels_last": False},
    "mkldnn off": lambda: patched(torch.backends.mkldnn, "enabled", False),
    "optimizer fused": lambda: patched(build_module, "build_optimizer", _optimizer("fused")),
    "optimizer foreach": lambda: patched(build_module, "build_optimizer", _optimizer("foreach")),
    "optimizer for-loop": lambda: patched(build_module, "build_optimizer", _optimizer("for-loop")),
    "optimizer.step()": lambda: patched(single_module, "FusedStep", OptimizerStep),
    "compile": lambda: {"compile": True},
    "precision fp32": lambda: {"precision": "fp32"},
    "precision bf16": lambda: {"precision": "bf16"},
    "act before max pool": lambda: patched(model_build, "POOL_COMMUTES", frozenset()),
    "per-batch normalise": lambda: patched(loader_module, "PRENORMALISE_MAX_BYTES", 0),
}


def finiteness_check_cost(n: int = 2000) -> float:
    """Microseconds per `math.isfinite(loss_sum.item())` on the CPU (the per-step NaN check)."""
    t = torch.zeros((), dtype=torch.float64)
    start = time.perf_counter()
    for _ in range(n):
        math.isfinite(t.item())
    return (time.perf_counter() - start) / n * 1e6


def measure(name: str, variant: str, data_dir: str, steps: int) -> float:
    ctx = VARIANTS[variant]()
    extra = ctx if isinstance(ctx, dict) else {}
    with (contextlib.nullcontext() if isinstance(ctx, dict) else ctx):
        return tinyvision_epoch({**CASES[name], **extra}, data_dir, steps, 20)["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds; the best of each variant is kept")
    p.add_argument("--cases", default="lenet,mlp-40-40")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--data-dir", default=os.environ.get("TINYVISION_DATA", "/work/shared/datasets"))
    args = p.parse_args()
    print(f"finiteness check: {finiteness_check_cost():.1f} us per step")
    for name in args.cases.split(","):
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for variant in args.variants.split(","):
                try:
                    seconds = measure(name, variant, args.data_dir, args.steps)
                except Exception as exc:  # e.g. no C++ compiler for torch.compile
                    print(f"{name:10} {variant:20} failed: {type(exc).__name__}: {str(exc)[:80]}", flush=True)
                    continue
                best[variant] = min(seconds, best.get(variant, math.inf))
                print(f"{name:10} {variant:20} {seconds:7.2f} s/epoch (extrapolated)", flush=True)
        print(f"-- {name}, best of {args.rounds} rounds (s/epoch):")
        for variant, seconds in best.items():
            print(f"   {variant:24} {seconds:7.2f}  ({seconds / best['default']:.2f}x default)"
                  if "default" in best else f"   {variant:24} {seconds:7.2f}")


if __name__ == "__main__":
    main()
