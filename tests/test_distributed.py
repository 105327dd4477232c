"""torchrun: 2 CPU processes with gloo match one process with the same global batch, and a job
whose worker died continues from the last checkpoint when it is started again."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tinyvision import runs
from tinyvision.files import load_weights

# Each rank sums gradients over half the batch and gloo averages them: the same mathematics as
# one process, in another order of float additions. Stated tolerance on weights and metrics:
TOLERANCE = 1e-4
TRAIN = ["train", "--dataset", "digits", "--model", "digits-mlp", "--epochs", "4", "--batch-size", "64",
         "threads=1", "--quiet"]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TINYVISION_DIST_TIMEOUT": "20"}
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(args: list[str], *extra: str, env: dict[str, str] | None = None,
             timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *extra, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**_env(), **(env or {})})


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_weights(run_dir / runs.WEIGHTS)[0]


def _assert_same_training(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < TOLERANCE
    va = [r["val_loss"] for r in runs.read_metrics(a)]
    vb = [r["val_loss"] for r in runs.read_metrics(b)]
    assert va == pytest.approx(vb, abs=TOLERANCE)


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("single") / "run"
    from tinyvision.cli import main

    assert main([*TRAIN, "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, single_process_run) -> None:
    run_dir = tmp_path / "ddp"
    proc = _torchrun(["-m", "tinyvision.cli", *TRAIN, "--run-dir", str(run_dir)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("completed:") == 1  # only rank 0 reports and writes
    assert runs.read_result(run_dir)["status"] == "completed"
    _assert_same_training(run_dir, single_process_run)


@pytest.mark.slow
def test_a_job_whose_worker_died_resumes_from_the_last_checkpoint(tmp_path, single_process_run) -> None:
    # Attempt 1: rank 1 dies after epoch 2; torchrun stops the job. Attempt 2 (the same command,
    # as torchrun's own restart or a scheduler's relaunch runs it): both ranks find the unfinished
    # run's checkpoint and continue from it.
    script = tmp_path / "flaky.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        from tinyvision import cli, pipeline
        real_train = pipeline.train
        def train(*args, **kwargs):
            if os.environ.get("FAIL_ONCE") and os.environ["RANK"] == "1":
                def die(row):
                    if row["epoch"] == 2:
                        os._exit(17)
                kwargs["on_epoch"] = die
            return real_train(*args, **kwargs)
        pipeline.train = train
        sys.exit(cli.main(sys.argv[1:]))
    """))
    run_dir = tmp_path / "ddp"
    first = _torchrun([str(script), *TRAIN, "--run-dir", str(run_dir)], env={"FAIL_ONCE": "1"})
    assert first.returncode != 0
    epochs_saved = len(runs.read_metrics(run_dir))
    assert 1 <= epochs_saved <= 2 and (run_dir / runs.CHECKPOINT).exists()
    assert runs.read_result(run_dir)["status"] != "completed"

    second = _torchrun([str(script), *TRAIN, "--run-dir", str(run_dir)])
    assert second.returncode == 0, second.stderr[-3000:]
    assert [r["epoch"] for r in runs.read_metrics(run_dir)] == [1, 2, 3, 4]
    assert runs.read_result(run_dir)["status"] == "completed"
    _assert_same_training(run_dir, single_process_run)
