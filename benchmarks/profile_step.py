"""Where a training step's time goes: tinyvision's own loop (train_epoch) under torch.profiler, the
operators' self time grouped by job (convolutions, pooling, dense layers, casts, optimiser, batch
gathering, ...), in milliseconds per step, for each precision asked.

    python -m benchmarks.profile_step [--model lenet] [--precisions fp32,bf16] [--steps 100] [--data-dir DIR]

Same case as the side-by-side benchmark (LeNet 20-50-500, SGD lr 0.01 momentum 0.9, batch 64 on
MNIST); the profiler adds its own cost per operator, so read the shares, not the absolute total
(the side-by-side benchmark gives the unprofiled time per step).
"""
from __future__ import annotations

import argparse
import os
from collections import defaultdict
from typing import Any

from torch.profiler import ProfilerActivity, profile

from tinyvision.config import make_config
from tinyvision.data import load_data
from tinyvision.pipeline import prepare
from tinyvision.training.loop import train_epoch

from .machine import describe_machine
from .side_by_side import BATCH, CASES, StepMarks

# operator name fragments -> job; the first match wins (order matters: a backward before its forward)
JOBS = [
    ("convolution", ("conv", "mkldnn_convolution")),
    ("max pool", ("max_pool", "pool2d")),
    ("dense layers (matmul)", ("addmm", "aten::mm", "aten::bmm", "matmul", "linear")),
    ("casts and copies", ("aten::to", "_to_copy", "copy_", "contiguous", "clone")),
    ("activation", ("relu", "threshold", "sigmoid", "tanh", "gelu")),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss", "_softmax")),
    ("optimiser", ("_fused_", "foreach", "optimizer", "zero_", "fill_")),
    ("batch gathering", ("index", "randperm", "gather")),
    ("reductions and bookkeeping", ("sum", "add", "mul", "div", "eq", "argmax", "item", "isfinite")),
]


def job_of(name: str) -> str:
    lowered = name.lower()
    for job, fragments in JOBS:
        if any(fragment in lowered for fragment in fragments):
            return job
    return "other"


def profile_steps(model: str, precision: str, data: Any, data_dir: str, steps: int, warmup: int) -> dict[str, Any]:
    """Self CPU milliseconds per step by job, and the top operators, over `steps` profiled steps."""
    cfg = make_config({"dataset": "mnist", "data_dir": data_dir, "batch_size": BATCH, **CASES[model],
                       "precision": precision})
    trainee, _ = prepare([cfg], data=data)
    warm = StepMarks(warmup)
    train_epoch(trainee, warm.stop, warm)  # oneDNN primitives made, caches warm
    marks = StepMarks(steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_epoch(trainee, marks.stop, marks)
    wall_ms = 1e3 * (marks.times[-1] - marks.times[0]) / (len(marks.times) - 1)
    by_job: dict[str, float] = defaultdict(float)
    ops = []
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1e3 / len(marks.times)
        if ms > 0:
            by_job[job_of(event.key)] += ms
            ops.append((ms, event.key))
    return {"model": model, "precision": precision, "profiled_ms_per_step": wall_ms,
            "jobs_ms_per_step": dict(sorted(by_job.items(), key=lambda kv: -kv[1])),
            "top_ops_ms_per_step": [(name, ms) for ms, name in sorted(ops, reverse=True)[:12]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet", choices=sorted(CASES))
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--data-dir", default=os.environ.get("TINYVISION_DATA", "/work/shared/datasets"))
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    data = load_data(make_config(dataset="mnist", data_dir=args.data_dir))
    for precision in args.precisions.split(","):
        row = profile_steps(args.model, precision, data, args.data_dir, args.steps, args.warmup)
        total = sum(row["jobs_ms_per_step"].values())
        print(f"\n{args.model}, {precision}: {row['profiled_ms_per_step']:.2f} ms per step under the profiler "
              f"({total:.2f} ms of operator self time)")
        for job, ms in row["jobs_ms_per_step"].items():
            print(f"  {job:<28} {ms:6.3f} ms  {100 * ms / total:5.1f}%")
        print("  top operators: " + "; ".join(f"{name} {ms:.3f}" for name, ms in row["top_ops_ms_per_step"]))


if __name__ == "__main__":
    main()
