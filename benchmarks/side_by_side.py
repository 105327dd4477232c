"""Per training image at batch 64 on MNIST, side by side in one run: the per-sample loader most
PyTorch code uses (torchvision's MNIST), a plain loop over tensors preloaded in memory as
tutorials write it (TensorDataset + DataLoader; NCHW, and channels_last for the CNN), a loop that
indexes the preloaded tensor itself (no DataLoader: the leanest a script gets), and tinyvision
(its default, auto measured by probe.py; fp32 and bf16 pinned).

    python -m benchmarks.side_by_side [--steps 200] [--rounds 3] [--data-dir DIR] [--json PATH]

Every column trains the same model (LeNet 20-50-500 with SGD lr 0.01 momentum 0.9; MLP
784-40-40-10 with Adam lr 1e-3) on the same 55,000 training images: `warmup` steps, then `steps`
timed ones, per column, in rounds (the median over rounds is shown: a 2-core machine's load moves).
The baselines run with PyTorch's default optimiser flags and fp32, as a plain script does.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from tinyvision.config import make_config
from tinyvision.data import load_data
from tinyvision.models import create_model
from tinyvision.pipeline import prepare
from tinyvision.stopping import StopRequest
from tinyvision.training.loop import train_epoch

from . import baseline
from .machine import describe_machine

BATCH = 64
CASES = {"lenet": {"model": "lenet", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9},
         "mlp-40-40": {"model": "mlp-40-40", "optimizer": "adam", "lr": 1e-3}}
GOALS = {"lenet": 2.0, "mlp-40-40": 4.0}  # tinyvision default against the fastest plain loop


def per_sample(case: dict, data: Any, data_dir: str, steps: int, warmup: int) -> float:
    """Seconds per timed step of the per-sample pipeline (torchvision's code, or the same work)."""
    torch.manual_seed(0)
    dataset, _ = baseline.per_sample_dataset(data.train.images, data.train.labels, data_dir, train=True)
    net = create_model(case["model"], data.input_shape, data.num_classes)
    optimizer = baseline.optimizer_for(net, case["optimizer"], case["lr"], case.get("momentum", 0.9))
    seconds, timed = baseline.train_steps(net, optimizer, baseline.loader(dataset, BATCH, shuffle=True),
                                          max_steps=steps, warmup=warmup)
    return seconds / timed


def preloaded(case: dict, data: Any, steps: int, warmup: int, channels_last: bool, loader: bool) -> float:
    """Seconds per timed step of a plain loop over the normalised split held as one tensor: through
    TensorDataset + DataLoader (loader=True), or indexing the tensor with a permutation."""
    torch.manual_seed(0)
    x = (data.train.images.float() / 255.0 - 0.1307) / 0.3081
    y = data.train.labels
    net = create_model(case["model"], data.input_shape, data.num_classes)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = baseline.optimizer_for(net, case["optimizer"], case["lr"], case.get("momentum", 0.9))
    if loader:
        batches = iter(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), BATCH, shuffle=True))
    else:
        order = torch.randperm(len(y))
        batches = ((x[order[i * BATCH:(i + 1) * BATCH]], y[order[i * BATCH:(i + 1) * BATCH]])
                   for i in range(len(y) // BATCH))
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        xb, yb = next(batches)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad()
        F.cross_entropy(net(xb), yb).backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


class StepMarks:
    """The loop's progress ticks: a timestamp per step (train_epoch calls tick after each)."""

    def __init__(self, stop_after: int) -> None:
        self.times: list[float] = []
        self.stop = _StopAfter(self, stop_after)

    def start_epoch(self, epoch: int, steps: int) -> Callable[[], None]:
        return lambda: self.times.append(time.perf_counter())


class _StopAfter(StopRequest):
    def __init__(self, marks: StepMarks, n: int) -> None:
        super().__init__()
        self.marks, self.n = marks, n

    @property
    def requested(self) -> bool:
        return len(self.marks.times) >= self.n


def tinyvision(case: dict, data: Any, data_dir: str, steps: int, warmup: int, **pinned: Any) -> tuple[float, Any]:
    """Seconds per timed step of tinyvision's own loop (train_epoch), and what auto decided."""
    cfg = make_config({"dataset": "mnist", "data_dir": data_dir, "batch_size": BATCH, **case, **pinned})
    trainee, _ = prepare([cfg], data=data)
    marks = StepMarks(warmup + steps)
    train_epoch(trainee, marks.stop, marks)
    return (marks.times[-1] - marks.times[warmup - 1]) / steps, trainee.decision


def measure(name: str, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    case, cnn = CASES[name], name == "lenet"
    columns: dict[str, Callable[[], float]] = {
        "per-sample loader": lambda: per_sample(case, data, args.data_dir, args.steps // 4, 5),
        "preloaded plain loop": lambda: preloaded(case, data, args.steps, args.warmup, False, True)}
    if cnn:
        columns["preloaded, channels_last"] = lambda: preloaded(case, data, args.steps, args.warmup, True, True)
    columns["indexing loop"] = lambda: preloaded(case, data, args.steps, args.warmup, cnn, False)
    decided: dict[str, Any] = {}

    def default() -> float:
        seconds, decision = tinyvision(case, data, args.data_dir, args.steps, args.warmup)
        decided.update(decision.record())
        return seconds

    columns["tinyvision default"] = default
    columns["tinyvision fp32"] = lambda: tinyvision(case, data, args.data_dir, args.steps, args.warmup,
                                                    precision="fp32")[0]
    columns["tinyvision bf16"] = lambda: tinyvision(case, data, args.data_dir, args.steps, args.warmup,
                                                    precision="bf16")[0]
    times: dict[str, list[float]] = {column: [] for column in columns}
    for _ in range(args.rounds):
        for column, fn in columns.items():
            times[column].append(fn())
    us = {column: 1e6 * statistics.median(t) / BATCH for column, t in times.items()}
    plain = min(us[c] for c in us if c.startswith("preloaded"))  # the baseline: the faster DataLoader loop
    row = {"model": name, "us_per_image": us, "auto": {k: decided[k] for k in ("precision", "threads", "channels_last")},
           "speedup_vs_plain": plain / us["tinyvision default"], "goal": GOALS[name],
           "speedup_vs_indexing": us["indexing loop"] / us["tinyvision default"],
           "default_vs_best_pinned": us["tinyvision default"] / min(us["tinyvision fp32"], us["tinyvision bf16"])}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per column (default: 200)")
    parser.add_argument("--warmup", type=int, default=20, help="steps before timing (default: 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the columns; medians shown (default: 3)")
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--data-dir", default=os.environ.get("TINYVISION_DATA", "/work/shared/datasets"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    data = load_data(make_config(dataset="mnist", data_dir=args.data_dir))
    rows = []
    for name in args.models.split(","):
        row = measure(name, data, args)
        rows.append(row)
        cells = "  ".join(f"{column} {value:.1f}" for column, value in row["us_per_image"].items())
        print(f"{name}: us per training image: {cells}", flush=True)
        print(f"{name}: auto chose {row['auto']}; default vs the preloaded plain loop {row['speedup_vs_plain']:.2f}x "
              f"(goal {row['goal']:g}x), vs the indexing loop {row['speedup_vs_indexing']:.2f}x; default / fastest "
              f"pinned precision {row['default_vs_best_pinned']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": describe_machine(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
