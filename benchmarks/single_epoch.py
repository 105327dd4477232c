"""A single run's epoch, this tree against another revision of tinyvision, measured in one run.

    python -m benchmarks.single_epoch --against 613c305 [--models lenet,mlp-40-40] [--repeats 5]

Each side is `python -m tinyvision.cli train` in a fresh process (the other revision from a git
worktree in a temporary folder, put first on PYTHONPATH), alternating A, B, A, B... so that a
change in the machine's load hits both; the figure is the epoch seconds the run itself writes in
metrics.csv (the training loop over the epoch, validation excluded) of its last epoch (warm), the
median over the repeats. MNIST, batch 64, the model's usual optimiser, fp32 and the default
precision.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
MODELS = {"lenet": ["optimizer=sgd", "momentum=0.9", "lr=0.01"], "mlp-40-40": ["optimizer=adam", "lr=0.001"]}


def epoch_seconds(tree: Path, model: str, data_dir: str, precision: str, out: Path) -> float:
    """The last epoch's seconds of a 2-epoch run trained by the tinyvision in `tree`."""
    run_dir = out / f"run{len(list(out.iterdir()))}"
    env = {**os.environ, "PYTHONPATH": str(tree), "TINYVISION_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "tinyvision.cli", "train", "--dataset", "mnist", "--model", model,
                    "--epochs", "2", "--batch-size", "64", "--data-dir", data_dir, "--run-dir", str(run_dir),
                    "--quiet", "--no-report", f"precision={precision}", *MODELS[model]],
                   check=True, env=env, capture_output=True, cwd=out)
    with (run_dir / "metrics.csv").open() as f:
        return float(list(csv.DictReader(f))[-1]["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="git revision to compare with (e.g. 613c305)")
    parser.add_argument("--models", default="lenet,mlp-40-40")
    parser.add_argument("--precisions", default="fp32,auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=os.environ.get("TINYVISION_DATA", "/work/shared/datasets"))
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.against],
                       check=True, capture_output=True)
        try:
            for model in args.models.split(","):
                for precision in args.precisions.split(","):
                    times: dict[str, list[float]] = {"this": [], args.against: []}
                    for _ in range(args.repeats):
                        for name, tree in (("this", REPO), (args.against, old)):
                            out = Path(tmp) / f"{model}-{precision}-{name}"
                            out.mkdir(exist_ok=True)
                            times[name].append(epoch_seconds(tree, model, args.data_dir, precision, out))
                    this, before = statistics.median(times["this"]), statistics.median(times[args.against])
                    print(f"{model:<10} {precision:<5} epoch (median of {args.repeats}): this {this:.2f} s, "
                          f"{args.against} {before:.2f} s: this / before = {this / before:.3f}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], capture_output=True)


if __name__ == "__main__":
    main()
