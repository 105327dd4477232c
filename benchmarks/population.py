"""Runs per hour: a population (K runs trained as one stacked model) against the same runs trained
one at a time, measured in one process on the same machine, same data, same device.

    python -m benchmarks.population [--quick] [--epochs N] [--cases A,B] [--members K] [--single-runs N]
                                    [--device auto|cpu|cuda] [--threads N] [--data-dir DIR] [--json PATH]
    python -m benchmarks.population --check [--device cuda]   # members against single runs, on this device
    python -m benchmarks.population --experiment examples/lr-sweep-adam.yaml [--population 4]

Each side is timed from building its models to the end of its last epoch (tinyvision.pipeline.prepare
and the training loop, per run or per population), validation every epoch included; the dataset is
loaded once beforehand for both. Test evaluation and run-directory
files are not in either figure. Cases (issue 14): 12 seeds of mlp-40-40 at batch 64 (each member
its own batch), a 12-member Adam lr sweep at batch 2048 (one seed: the members share each batch),
examples/lr-sweep-adam.yaml's 12 runs (4 rates x 3 seeds: one population, a batch per seed),
8 seeds of lenet; on a GPU also `mnist-fast` (the 99% MNIST recipe) seeds. --members K sets the
seeds of the seed cases; --single-runs N times only the first N runs one at a time and scales
their mean to all of them (for long cases on a GPU). This machine may be shared: compare only
figures from one run.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from tinyvision.config import RunConfig, make_config
from tinyvision.data import load_data
from tinyvision.pipeline import prepare
from tinyvision.training.loop import train

from .machine import describe_machine

SWEEP = dict(model="mlp-40-40", optimizer="adam", batch_size=2048, schedule="exponential", gamma=0.95)
CASES: dict[str, dict[str, Any]] = {
    "mlp-seeds": dict(base=dict(model="mlp-40-40", optimizer="adam", lr=1e-3, batch_size=64), seeds=12),
    "lr-sweep": dict(base=SWEEP, seeds=1, lrs=[1e-5 * 10 ** (3 * i / 11) for i in range(12)]),
    "lr-sweep-yaml": dict(base=SWEEP, seeds=3, lrs=[1e-5, 1e-4, 1e-3, 1e-2]),
    "lenet-seeds": dict(base=dict(model="lenet", optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64), seeds=8),
    "mnist-fast-seeds": dict(base=dict(recipe="mnist-fast"), seeds=32),
}
CPU_CASES = "mlp-seeds,lr-sweep,lr-sweep-yaml,lenet-seeds"
QUICK_SUBSET = {"lenet-seeds": 8192, "mnist-fast-seeds": 8192}  # --quick: fewer training images where slow


def case_configs(name: str, args: argparse.Namespace) -> list[list[RunConfig]]:
    """The case's runs as populations (one each here)."""
    case = CASES[name]
    seeds = range(args.members if args.members and case["seeds"] > 1 and "lrs" not in case else case["seeds"])
    common = {"dataset": "mnist", "epochs": args.epochs, "device": args.device, "data_dir": args.data_dir,
              "threads": args.threads, **case["base"], **({"precision": args.precision} if args.precision else {})}
    if args.quick and name in QUICK_SUBSET:
        common["train_subset"] = QUICK_SUBSET[name]
    if "lrs" in case:  # one population, seed-major: the members of a seed share its batches
        return [[make_config({**common, "seed": s, "lr": lr}) for s in seeds for lr in case["lrs"]]]
    return [[make_config({**common, "seed": s}) for s in seeds]]


def sync(device: str) -> None:
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def one_at_a_time(groups: list[list[RunConfig]], data: Any, limit: int = 0) -> tuple[float, list[float]]:
    """Seconds for every run, each built and fitted alone (the first `limit` runs, scaled, when
    limit > 0); and the runs' epoch seconds."""
    total, epochs = 0.0, []
    every = [c for group in groups for c in group]
    timed_runs = every[:limit] if limit > 0 else every
    for cfg in timed_runs:
        seconds, trainee = timed(lambda: fit([cfg], data), cfg.device)
        history = trainee.members[0].history
        total += seconds
        epochs += [row["seconds"] for row in history if row["epoch"] >= 1]
    return total * len(every) / len(timed_runs), epochs


def fit(cfgs: list[RunConfig], data: Any) -> Any:
    """The runs built (one: its own module; several: stacked) and trained to their end."""
    trainee, _ = prepare(cfgs, data=data)
    for _ in train(trainee):
        pass
    return trainee


def populations(groups: list[list[RunConfig]], data: Any) -> tuple[float, list[str]]:
    """Seconds for every population, built and fitted; the members' statuses."""
    total, statuses = 0.0, []
    for group in groups:
        seconds, trainee = timed(lambda: fit(group, data), group[0].device)
        total += seconds
        statuses += [m.outcome.status for m in trainee.members]
    return total, statuses


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    groups = case_configs(name, args)
    data = load_data(groups[0][0])
    prepare([groups[0][0]], data=data)  # warm-up: oneDNN primitives, caches (neither side pays it)
    runs = sum(map(len, groups))
    single_s, epoch_s = one_at_a_time(groups, data, args.single_runs)
    pop_s, statuses = populations(groups, data)
    return {"case": name, "runs": runs, "populations": [len(g) for g in groups], "epochs": args.epochs,
            "single_runs_timed": min(args.single_runs, runs) if args.single_runs > 0 else runs,
            "train_images": len(data.train) if not groups[0][0].train_subset else groups[0][0].train_subset,
            "one_at_a_time_s": single_s, "population_s": pop_s, "ratio": single_s / pop_s,
            "runs_per_hour_single": 3600 * runs / single_s, "runs_per_hour_population": 3600 * runs / pop_s,
            "single_epoch_s": sum(epoch_s) / max(len(epoch_s), 1), "statuses": sorted(set(statuses)),
            "load_after": os.getloadavg()[0]}


def experiment(args: argparse.Namespace) -> dict[str, Any]:
    """`tinyvision run FILE` end to end (every run's directory, test evaluation, tables; no report),
    one at a time and with --population N, into fresh directories."""
    import tempfile

    from tinyvision.experiments import load_experiment, run_experiment

    overrides = [f"data_dir={args.data_dir}"] + ([f"threads={args.threads}"] if args.threads else [])
    exp = load_experiment(args.experiment, overrides=overrides)
    load_data(exp.config(exp.points[0], exp.base.seed))
    with tempfile.TemporaryDirectory() as tmp:
        times = {n: timed(lambda: run_experiment(exp, Path(tmp) / str(n), quiet=True, population=n), "cpu")[0]
                 for n in (1, args.population)}
    runs = len(exp.points) * len(exp.seeds)
    return {"case": f"run {args.experiment} --population {args.population}", "runs": runs,
            "one_at_a_time_s": times[1], "population_s": times[args.population], "ratio": times[1] / times[args.population],
            "runs_per_hour_single": 3600 * runs / times[1], "runs_per_hour_population": 3600 * runs / times[args.population],
            "load_after": os.getloadavg()[0]}


def check(args: argparse.Namespace) -> int:
    """Members against single runs on this device (fp32, deterministic: no TF32): the largest
    weight difference after one epoch; 0 when within 1e-3."""
    cfgs = [make_config({"dataset": "mnist", "data_dir": args.data_dir, "device": args.device, "threads": args.threads,
                         "model": "lenet", "optimizer": "sgd", "momentum": 0.9, "lr": lr, "seed": k,
                         "epochs": 1, "train_subset": 1024, "precision": "fp32", "deterministic": True})
            for k, lr in enumerate([0.01, 0.02, 0.005, 0.01])]  # 16 steps at rates where rounding stays small
    data = load_data(cfgs[0])
    pop = fit(cfgs, data)
    worst = 0.0
    for k, cfg in enumerate(cfgs):
        mine, theirs = pop.member_state(k), fit([cfg], data).member_state(0)
        worst = max(worst, max(float((mine[n].double() - theirs[n].double()).abs().max())
                               for n in theirs if theirs[n].is_floating_point()))
    print(f"{'PASS' if worst <= 1e-3 else 'FAIL'}: 4 lenet members vs single runs on {pop.device}: "
          f"largest weight difference {worst:.2e} (limit 1e-3)")
    return 0 if worst <= 1e-3 else 1


def show(row: dict[str, Any]) -> str:
    return (f"{row['case']:<17} {row['runs']:>4} runs in {'+'.join(map(str, row['populations']))}: "
            f"one at a time {row['one_at_a_time_s']:7.1f} s ({row['runs_per_hour_single']:7.0f} runs/h), "
            f"population {row['population_s']:7.1f} s ({row['runs_per_hour_population']:7.0f} runs/h): "
            f"{row['ratio']:.2f}x; single-run epoch {row['single_epoch_s']:.2f} s; load {row['load_after']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=CPU_CASES, help=f"comma-separated, of {', '.join(CASES)} (default: {CPU_CASES})")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default: 2)")
    parser.add_argument("--members", type=int, help="seeds in the seed cases (default: the issue's 12 / 8 / 32)")
    parser.add_argument("--quick", action="store_true", help=f"fewer training images for {', '.join(QUICK_SUBSET)}")
    parser.add_argument("--single-runs", type=int, default=0,
                        help="time only this many runs one at a time and scale (default: 0 = all)")
    parser.add_argument("--check", action="store_true",
                        help="instead: 4 lenet members against their single runs (16 steps of 64 images), "
                             "max weight difference; exit 1 above 1e-3")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch threads (default: every core)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                        help="every run's precision (default: the config's, auto)")
    parser.add_argument("--data-dir", default=os.environ.get("TINYVISION_DATA", "/work/shared/datasets"),
                        help="folder holding mnist/ (default: $TINYVISION_DATA, else /work/shared/datasets)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--experiment", type=Path, help="instead: time `tinyvision run` on this file end to end, "
                                                            "one at a time and with --population")
    parser.add_argument("--population", type=int, default=12, help="with --experiment (default: 12)")
    args = parser.parse_args()
    if args.check:
        raise SystemExit(check(args))
    if args.experiment:
        print(describe_machine(args.device), flush=True)
        row = experiment(args)
        print(f"{row['case']}: {row['runs']} runs, one at a time {row['one_at_a_time_s']:.1f} s, population "
              f"{row['population_s']:.1f} s: {row['ratio']:.2f}x (load {row['load_after']:.1f})")
        if args.json:
            args.json.write_text(json.dumps([row], indent=2) + "\n")
        return
    print(f"{describe_machine(args.device)}; {args.threads or os.cpu_count()} threads, "
          f"precision {args.precision or 'auto'}, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    rows = []
    for name in args.cases.split(","):
        rows.append(measure(name, args))
        print(show(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
