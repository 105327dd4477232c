"""tinyvision speed benchmark: epoch times against the per-sample pipeline, FLOP utilisation,
time to 99% MNIST test accuracy and evaluation throughput, all measured in one run.

    python -m benchmarks.run [--quick] [--device auto|cpu|cuda] [--json PATH] [--data-dir DIR]

Every baseline is measured in the same process (or, for time to accuracy, the same machine and run)
and on the same device as tinyvision, the matmul peak too. --quick times the first N batches of an
epoch (after a warm-up) and extrapolates to the full epoch; the full mode times whole epochs,
warm-up included. On CUDA every timer synchronises the device first. See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import torch

from benchmarks import baseline
from tinyvision import make_config, summarize
from tinyvision.data.loader import DeviceLoader
from tinyvision.evaluate import predict_loader
from tinyvision.models import create_model
from tinyvision.pipeline import prepare
from tinyvision.runtime import (configure_threads, cuda_ampere_or_later, precision_name, resolve_device,
                                set_determinism)
from tinyvision.training.loop import train_epoch

from .machine import describe_machine
from .side_by_side import _Marks

DEFAULT_THREADS = torch.get_num_threads()  # what a plain script gets; restored before each baseline
TARGETS = {"lenet": 4.0, "mlp-40-40": 15.0}  # epoch speed-up over the per-sample pipeline
TTA_TARGET, TTA_LIMIT_S = 0.99, 20.0  # accuracy and seconds from process start
CASES = {  # the presets of the issue: model, optimiser and lr, batch 64
    "lenet": dict(model="lenet", optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64),
    "mlp-40-40": dict(model="mlp-40-40", optimizer="adam", lr=1e-3, batch_size=64),
}
# torch's own fp32 settings, what a plain script runs with (a tinyvision run changes them on CUDA:
# runtime.set_determinism); the per-sample baseline gets them back
PLAIN_MATH = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels: a CUDA timer without it times the launches only."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_math() -> None:
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = PLAIN_MATH
    torch.use_deterministic_algorithms(False)


def peak_gflops(n: int = 2048, reps: int = 10, dtype: torch.dtype = torch.float32,
                device: torch.device = torch.device("cpu"), tf32: bool = False) -> float:
    """Matrix-multiply throughput of `device` in `dtype`: the best of `reps` n x n torch.mm
    (fp32: IEEE, or with tf32=True on CUDA TF32 tensor cores; flags restored afterwards)."""
    saved = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32" if tf32 else "ieee"
    try:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        torch.mm(a, b)  # warm-up
        best = min(_timed(lambda: torch.mm(a, b), device) for _ in range(reps))
    finally:
        torch.backends.cuda.matmul.fp32_precision = saved
    return 2 * n**3 / best / 1e9


def _timed(fn: Any, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def tinyvision_epoch(case: dict, data_dir: str, steps: Optional[int], warmup: int,
                     device: str = "auto") -> dict[str, Any]:
    """Seconds of one training epoch through tinyvision's own loop (train_epoch, no validation).

    steps=None: a whole epoch, warm-up included. Else steps [warmup, warmup+steps) are timed
    and scaled to the epoch's length.
    """
    trainee, data = prepare([make_config(dataset="mnist", data_dir=data_dir, epochs=1, **{"device": device, **case})])
    total = trainee.steps_per_epoch()
    marks = _Marks(warmup + steps if steps is not None else total + 1)
    sync(trainee.device)  # the full-epoch timer starts inside train_epoch (and ends on a host sync)
    rows = train_epoch(trainee, marks.stop, marks)
    if rows == []:
        raise RuntimeError(f"{case}: the run diverged in its timed epoch")
    if rows is None:  # stopped after warmup + steps
        seconds, timed = marks.times[-1] - marks.times[warmup - 1], steps
    else:
        seconds, timed = rows[0]["seconds"], total
    cfg = trainee.members[0].cfg
    return {"seconds": seconds * total / timed, "timed_steps": timed, "steps": total,
            "samples": trainee.loader.samples_per_rank(),
            "setup": SimpleNamespace(trainee=trainee, data=data, device=trainee.device, net=trainee.net, cfg=cfg),
            "precision": precision_name(cfg.precision, trainee.device, trainee.net)}


def per_sample_epoch(case: dict, setup: Any, data_dir: str, steps: Optional[int], warmup: int) -> dict[str, Any]:
    """The same model, optimiser and batch size through the per-sample pipeline, on tinyvision's
    device, with torch's default threads and fp32 settings, as a plain script runs."""
    torch.set_num_threads(DEFAULT_THREADS)
    plain_math()
    torch.manual_seed(0)
    split = setup.data.train  # the same 55,000 training images tinyvision uses
    dataset, kind = baseline.per_sample_dataset(split.images, split.labels, data_dir, train=True)
    batches = baseline.loader(dataset, case["batch_size"], shuffle=True)
    net = create_model(case["model"], setup.data.input_shape, setup.data.num_classes).to(setup.device)
    optimizer = baseline.optimizer_for(net, case["optimizer"], case["lr"], case.get("momentum", 0.9))
    if steps is None:
        seconds, timed = baseline.train_steps(net, optimizer, batches, device=setup.device)
    else:
        seconds, timed = baseline.train_steps(net, optimizer, batches, max_steps=steps, warmup=warmup,
                                              device=setup.device)
    return {"seconds": seconds * len(batches) / timed, "timed_steps": timed, "steps": len(batches),
            "pipeline": kind, "test_loader": lambda: baseline.loader(
                baseline.per_sample_dataset(setup.data.test.images, setup.data.test.labels, data_dir, False)[0],
                1000, shuffle=False), "net": net}


def eval_throughput(setup: Any, repeats: int = 3) -> float:
    """Images per second of predict_loader over the MNIST test split (best of `repeats`)."""
    trainee, data = setup.trainee, setup.data
    loader = DeviceLoader(data.test, setup.cfg.eval_batch_size, device=trainee.device,
                          norm=trainee.loader.norm, channels_last=trainee.loader.channels_last)
    best = min(predict_loader(trainee.model, loader).seconds for _ in range(repeats))
    return len(data.test.labels) / best


def time_to_accuracy(mode: str, recipe: str, data_dir: str, device: torch.device,
                     extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run a child process; seconds from its start to its first test accuracy >= TTA_TARGET."""
    cmd = [sys.executable, "-m", "benchmarks.time_to_accuracy", mode, recipe, data_dir, str(device), *extra]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not rows:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["no output"]}
    hit = next((r for r in rows if r["accuracy"] >= TTA_TARGET), None)
    last = hit or rows[-1]
    return {"seconds": (last["t"] - start) if hit else None, "accuracy": last["accuracy"],
            "epochs": last["epoch"], "seconds_run": rows[-1]["t"] - start, "reached": hit is not None}


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="time the first batches of an epoch, extrapolated")
    p.add_argument("--steps", type=int, default=200, help="--quick: batches timed per epoch (default 200)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--data-dir", default=os.environ.get("TINYVISION_DATA", "/work/shared/datasets"),
                   help="folder holding mnist/ (default $TINYVISION_DATA or /work/shared/datasets)")
    p.add_argument("--recipe", default="mnist-fast", help="recipe for time to accuracy (default mnist-fast)")
    p.add_argument("--skip-tta", action="store_true", help="skip the time-to-accuracy subprocesses")
    p.add_argument("--device", default="auto",
                   help="device of tinyvision, the baseline and the matmul peak alike: auto, cpu, cuda, "
                        "cuda:N (default: auto)")
    args = p.parse_args(argv)
    print(describe_machine(args.device), flush=True)
    device = resolve_device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    steps, warmup = (args.steps, 20) if args.quick else (None, 0)
    out: dict[str, Any] = {"mode": "quick" if args.quick else "full", "device": str(device),
                           "machine": _machine(device), "cases": {}}
    # 2048 x 2048 in both modes (1024 read low and noisy on the CPU); the baseline's own math
    out["peak_gflops"] = peak_gflops(device=device)
    # emulated bf16 (a CPU without AVX512-BF16/AMX, a GPU before Ampere) is no peak, and its 2048^3
    # product can take a minute: not measured there (None)
    native_bf16 = device.type == "cpu" and bf16_is_native() or (device.type == "cuda" and cuda_ampere_or_later(device))
    out["peak_gflops_bf16"] = peak_gflops(dtype=torch.bfloat16, device=device) if native_bf16 else None
    if device.type == "cuda":  # what tinyvision's fp32 runs on there (runtime.set_determinism)
        out["peak_gflops_tf32"] = peak_gflops(device=device, tf32=True)
    for name, case in CASES.items():
        tv = tinyvision_epoch(case, args.data_dir, steps, warmup, device=str(device))
        setup = tv.pop("setup")
        base = per_sample_epoch(case, setup, args.data_dir, steps, warmup)
        macs = summarize(setup.net, setup.data.input_shape).macs
        flops = 3 * 2 * macs * tv["samples"]  # forward + backward (2x forward), 2 FLOPs per MAC
        row = {"tinyvision_s": tv["seconds"], "per_sample_s": base["seconds"],
               "speedup": base["seconds"] / tv["seconds"], "target": TARGETS[name],
               "timed_steps": tv["timed_steps"], "steps": tv["steps"], "samples": tv["samples"],
               "macs_per_sample": macs, "train_tflop_per_epoch": flops / 1e12,
               "achieved_gflops": flops / tv["seconds"] / 1e9,
               "flop_limit_s": flops / (out["peak_gflops"] * 1e9), "baseline_pipeline": base["pipeline"],
               "precision": tv["precision"]}
        row["fraction_of_peak"] = row["achieved_gflops"] / out["peak_gflops"]  # the fp32 peak, as asked
        row["fraction_of_precision_peak"] = row["achieved_gflops"] / (out.get(
            {"bf16": "peak_gflops_bf16", "tf32": "peak_gflops_tf32"}.get(tv["precision"], "")) or out["peak_gflops"])
        if tv["precision"] == "bf16":  # what the loop alone gives, without mixed precision
            fp32 = tinyvision_epoch({**case, "precision": "fp32"}, args.data_dir, steps, warmup,
                                    device=str(device))
            row["fp32_precision"] = fp32["precision"]  # "tf32" on CUDA
            row["tinyvision_fp32_s"] = fp32["seconds"]
            row["speedup_fp32"] = base["seconds"] / fp32["seconds"]
        if name == "lenet":
            torch.set_num_threads(DEFAULT_THREADS)
            plain_math()
            _, base_ips = baseline.accuracy(base["net"], base["test_loader"](), device=device)
            configure_threads(setup.cfg.threads)
            set_determinism(setup.cfg.deterministic, setup.device)  # tinyvision's fp32 math again
            out["eval"] = {"tinyvision_images_per_s": eval_throughput(setup), "per_sample_images_per_s": base_ips}
        out["cases"][name] = row
        _print_case(name, row, args.quick)
    if not args.skip_tta:
        out["time_to_accuracy"] = {
            "tinyvision": time_to_accuracy("tinyvision", args.recipe, args.data_dir, device),
            "per_sample": time_to_accuracy("per-sample", args.recipe, args.data_dir, device,
                                           ("1" if args.quick else "3", str(TTA_TARGET)))}
    print_table(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


def bf16_is_native() -> bool:
    """AVX512-BF16 or AMX on this CPU (a peak in emulated bf16 would take minutes: not measured)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _machine(device: torch.device) -> dict[str, Any]:
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch": torch.__version__, "threads": DEFAULT_THREADS, "python": platform.python_version(),
               "load_average": os.getloadavg()}  # other processes on the machine skew every number
    if device.type == "cuda":
        machine.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                       capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return machine


def _gflops(value: Optional[float]) -> str:
    return "n/a (emulated)" if value is None else f"{value:.1f}"


def _device_text(out: dict[str, Any]) -> str:
    gpu = out["machine"].get("gpu")
    return f"{out['device']} ({gpu}, CUDA {out['machine']['cuda']})" if gpu else out["device"]


def _print_case(name: str, row: dict, quick: bool) -> None:
    how = f"{row['timed_steps']} of {row['steps']} batches, extrapolated" if quick else "full epoch"
    print(f"[{name}] tinyvision {row['tinyvision_s']:.2f}s  per-sample {row['per_sample_s']:.2f}s  "
          f"({how})", file=sys.stderr, flush=True)


def print_table(out: dict[str, Any]) -> None:
    quick = out["mode"] == "quick"
    note = " (extrapolated from first batches)" if quick else " (full epochs)"
    tf32 = f", {out['peak_gflops_tf32']:.1f} tf32" if "peak_gflops_tf32" in out else ""
    print(f"\ntinyvision benchmark, mode {out['mode']}{note}; device {_device_text(out)} for tinyvision, "
          f"the per-sample baseline and the mm peak alike; torch {out['machine']['torch']}, "
          f"{out['machine']['threads']} threads; mm peak {out['peak_gflops']:.1f} GFLOP/s fp32, "
          f"{_gflops(out['peak_gflops_bf16'])} bf16{tf32}; "
          f"load average at start {out['machine']['load_average'][0]:.1f}")
    print(f"{'measure':44} {'tinyvision':>11} {'per-sample':>11} {'ratio':>8} {'target':>8}  met")
    for name, r in out["cases"].items():
        met = "yes" if r["speedup"] >= r["target"] else "NO"
        print(f"{name + ' epoch s (55,000 images, batch 64, ' + r['precision'] + ')':44} {r['tinyvision_s']:11.2f} "
              f"{r['per_sample_s']:11.2f} {r['speedup']:7.1f}x {r['target']:7.0f}x  {met}")
        if "tinyvision_fp32_s" in r:
            label = f"  the same with precision=fp32 ({r.get('fp32_precision', 'fp32')})"
            print(f"{label:44} {r['tinyvision_fp32_s']:11.2f} "
                  f"{r['per_sample_s']:11.2f} {r['speedup_fp32']:7.1f}x")
    for name, r in out["cases"].items():
        print(f"{name + ' fraction of fp32 mm peak':44} {100 * r['fraction_of_peak']:10.1f}% "
              f"{'':>11} {'':>8} {'':>8}   ({r['train_tflop_per_epoch']:.3f} TFLOP/epoch, "
              f"{r['achieved_gflops']:.1f} GFLOP/s, fp32 FLOP limit {r['flop_limit_s']:.2f}s; "
              f"{100 * r['fraction_of_precision_peak']:.1f}% of the {r['precision']} peak)")
    ev = out.get("eval")
    if ev:
        print(f"{'lenet evaluation images/s':44} {ev['tinyvision_images_per_s']:11.0f} "
              f"{ev['per_sample_images_per_s']:11.0f} "
              f"{ev['tinyvision_images_per_s'] / ev['per_sample_images_per_s']:7.1f}x")
    tta = out.get("time_to_accuracy")
    if tta:
        def fmt(r: dict) -> str:
            if "error" in r:
                return "error"
            return f"{r['seconds']:.1f}" if r["reached"] else f">{r['seconds_run']:.0f}"
        tv, ps = tta["tinyvision"], tta["per_sample"]
        met = "yes" if tv.get("reached") and tv["seconds"] <= TTA_LIMIT_S else "NO"
        print(f"{'seconds from process start to 99.0% test':44} {fmt(tv):>11} {fmt(ps):>11} "
              f"{'':>8} {TTA_LIMIT_S:7.0f}s  {met}")
        print(f"  (tinyvision: test {100 * tv.get('accuracy', 0):.2f}% after {tv.get('epochs')} epochs; "
              f"per-sample: test {100 * ps.get('accuracy', 0):.2f}% after {ps.get('epochs')} epochs)")


if __name__ == "__main__":
    main()
