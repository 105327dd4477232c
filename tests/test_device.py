"""Device paths: one GPU per torchrun process (else a one-line refusal), the process group left at
exit, the CLI's cuBLAS setting; and, on a GPU (`gpu` marker, TINYVISION_GPU_TESTS=1), CUDA against
the CPU, FusedStep against optimizer.step() on CUDA, and fp16 with its gradient scaler (resumed).

The CPU tests stand in for a GPU with monkeypatched torch.cuda functions: nothing here touches CUDA.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import tinyvision as tv
from tinyvision import distributed, runs
from tinyvision.files import load_weights
from tinyvision.cli import entry, main
from tinyvision.config import make_config
from tinyvision.errors import ConfigError

CUDA = torch.device("cuda")


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def _torchrun_env(monkeypatch: pytest.MonkeyPatch, local_rank: int, nproc: int) -> None:
    for name, value in {"RANK": local_rank, "WORLD_SIZE": nproc, "LOCAL_RANK": local_rank,
                        "LOCAL_WORLD_SIZE": nproc}.items():
        monkeypatch.setenv(name, str(value))


# -- one GPU per process ----------------------------------------------------------------------

@pytest.mark.parametrize("local_rank", [0, 1])
def test_more_processes_than_gpus_is_refused_by_every_rank(monkeypatch, local_rank) -> None:
    _fake_gpus(monkeypatch, 1)
    ctx = distributed.Context(rank=local_rank, world_size=2, local_rank=local_rank, local_world_size=2)
    with pytest.raises(ConfigError, match=r"2 processes .* but 1 visible CUDA GPU.*device=cpu .*--nproc-per-node 1"):
        distributed.setup(ctx, CUDA)  # rank 0 too: it must not wait in the group for a rank that failed


def test_the_refusal_is_one_line_and_exit_code_2_from_the_cli(monkeypatch, capsys, tmp_path) -> None:
    _fake_gpus(monkeypatch, 1)
    _torchrun_env(monkeypatch, 0, 2)
    rc = main(["train", "--dataset", "digits", "--model", "digits-mlp", "--epochs", "1", "--device", "cuda",
               "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "NCCL needs one GPU per process" in err, err
    assert not any(tmp_path.iterdir())  # refused before any run directory was made


def test_each_rank_binds_its_own_gpu_and_names_it_to_the_process_group(monkeypatch) -> None:
    _fake_gpus(monkeypatch, 2)
    calls: dict[str, object] = {}
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", d))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.update(backend=backend, **kw))
    monkeypatch.setattr(distributed.atexit, "register", lambda fn: calls.setdefault("atexit", fn))
    ctx = distributed.Context(rank=1, world_size=2, local_rank=1, local_world_size=2)
    assert distributed.setup(ctx, CUDA) == torch.device("cuda", 1)
    assert calls["set_device"] == torch.device("cuda", 1) and calls["backend"] == "nccl"
    assert calls["device_id"] == torch.device("cuda", 1)  # torch 2.13 accepts it (checked by signature)
    assert calls["atexit"] is distributed.teardown

    calls.clear()  # gloo on the CPU: no GPU, no device_id
    assert distributed.setup(ctx, torch.device("cpu")) == torch.device("cpu")
    assert calls["backend"] == "gloo" and "device_id" not in calls and "set_device" not in calls


def test_a_single_process_touches_no_process_group(monkeypatch) -> None:
    _fake_gpus(monkeypatch, 0)  # not even the GPU count is asked
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("joined a group"))
    assert distributed.setup(distributed.Context(), torch.device("cpu")) == torch.device("cpu")


def test_teardown_leaves_the_process_group_and_is_safe_to_repeat(tmp_path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    distributed.teardown()
    assert not dist.is_initialized()
    distributed.teardown()  # again, and without a group: nothing to do


def test_the_context_reads_torchruns_local_world_size(monkeypatch) -> None:
    _torchrun_env(monkeypatch, 1, 4)
    assert distributed.context() == distributed.Context(1, 4, 1, 4)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")  # another launcher: at least this process's GPU is needed
    assert distributed.context().local_world_size == 2


def test_an_explicit_gpu_index_beyond_the_visible_ones_is_a_config_error(monkeypatch) -> None:
    from tinyvision.runtime import resolve_device

    _fake_gpus(monkeypatch, 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"'device': 'cuda:2' .* 2 CUDA GPU"):
        resolve_device("cuda:2")


# -- the command's entry point ----------------------------------------------------------------

def _run_entry(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    left: list[str] = []
    monkeypatch.setattr(distributed, "teardown", lambda: left.append("teardown"))
    monkeypatch.setattr(sys, "argv", ["tinyvision", "models", "lenet"])
    with pytest.raises(SystemExit) as exit_:
        entry()
    assert exit_.value.code == 0
    return left


def test_entry_sets_the_cublas_workspace_before_any_command_and_leaves_the_group(monkeypatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "-")  # restored (to absent or its value) afterwards
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    assert _run_entry(monkeypatch) == ["teardown"]
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_entry_keeps_a_cublas_workspace_the_user_chose(monkeypatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    _run_entry(monkeypatch)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


# -- on a GPU (skipped without one; TINYVISION_GPU_TESTS=1 python -m pytest -m gpu) ------------

DIGITS = dict(dataset="digits", model="digits-cnn", epochs=25, batch_norm=True, augment="translate",
              translate=1, schedule="onecycle", lr=3e-3, label_smoothing=0.1)
# Other kernels sum in another order, so CPU and CUDA runs of one seed part ways after a few steps
# and end like two seeds: on Digits' 447 test images seeds spread about 1 point. Stated tolerance:
ACCURACY_GAP = 0.03  # 13 images


@pytest.mark.gpu
def test_cuda_and_cpu_reach_the_same_accuracy_on_digits(tmp_path) -> None:
    results = {d: tv.train({**DIGITS, "device": d}, out=tmp_path / d, quiet=True) for d in ("cpu", "cuda")}
    cpu, gpu = results["cpu"], results["cuda"]
    assert cpu["device"] == "cpu" and gpu["device"].startswith("cuda")
    expected = "bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp32"  # precision=auto
    assert gpu["precision"] == expected
    assert min(cpu["test"]["accuracy"], gpu["test"]["accuracy"]) >= 0.95
    assert abs(cpu["test"]["accuracy"] - gpu["test"]["accuracy"]) <= ACCURACY_GAP


@pytest.mark.gpu
def test_deterministic_cuda_runs_are_bit_identical_and_ieee_fp32(tmp_path) -> None:
    cfg = {**DIGITS, "epochs": 3, "device": "cuda", "deterministic": True}
    a, b = (tv.train(cfg, out=tmp_path / name, quiet=True) for name in "ab")
    wa, wb = (load_weights(Path(r["run_dir"]) / runs.WEIGHTS)[0] for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["test"]["loss"] == b["test"]["loss"]
    mlp = tv.train({"dataset": "digits", "model": "digits-mlp", "epochs": 1, "device": "cuda",
                    "precision": "fp32", "deterministic": True}, out=tmp_path / "mlp", quiet=True)
    assert mlp["precision"] == "fp32"  # deterministic: no TF32


def _fused_cuda_training(optimizer_name: str, fused_step: bool) -> tuple[nn.Module, dict, object]:
    from tinyvision._fused import FusedStep
    from tinyvision.optim import build_optimizer, build_scheduler

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    net = net.to(CUDA, memory_format=torch.channels_last)  # as the run's CNNs: channels_last weights
    cfg = make_config(dataset="digits", model="mlp", optimizer=optimizer_name, schedule="onecycle", epochs=1,
                      lr=0.05 if optimizer_name == "sgd" else 3e-3, weight_decay=1e-3)
    optimizer = build_optimizer(net, cfg, fused=True)
    scheduler = build_scheduler(optimizer, cfg, 12)  # one-cycle moves lr and momentum / betas
    step, gen = FusedStep(optimizer), torch.Generator(device="cuda").manual_seed(1)
    for _ in range(12):
        x = torch.randn(16, 1, 8, 8, device="cuda", generator=gen).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (16,), device="cuda", generator=gen)
        loss = F.cross_entropy(net(x), y)
        if fused_step:
            step.zero_grad()
            loss.backward()
            step()
        else:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return net, optimizer.state_dict(), step


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "adamw"])
def test_fused_step_on_cuda_is_bit_identical_to_optimizer_step(optimizer_name) -> None:
    expected, expected_state, _ = _fused_cuda_training(optimizer_name, fused_step=False)
    got, got_state, step = _fused_cuda_training(optimizer_name, fused_step=True)
    assert step.kernel_args is not None  # the fast path ran (not only optimizer.step())
    for (name, a), b in zip(expected.named_parameters(), got.parameters()):
        assert torch.equal(a, b), name
    assert expected_state["param_groups"] == got_state["param_groups"]
    for key, values in expected_state["state"].items():
        for field, value in values.items():
            assert torch.equal(value, got_state["state"][key][field]), (key, field)


@pytest.mark.gpu
def test_fp16_trains_with_a_gradient_scaler_and_resumes_bit_identically(tmp_path, monkeypatch) -> None:
    """precision=fp16 (a T4's mixed precision): float16 autocast with torch.amp.GradScaler, the
    gradients unscaled before clipping; the scaler's state is in the checkpoint, so a run stopped
    mid-epoch and resumed ends as the uninterrupted one (deterministic kernels)."""
    import math

    from test_resume import metrics, stop_after

    from tinyvision.files import load_state

    cfg = dict(dataset="digits", model="digits-cnn", epochs=3, batch_size=32, seed=5, train_subset=480, val_size=200,
               device="cuda", precision="fp16", deterministic=True, clip_grad_norm=1.0, lr=3e-3)
    whole = tv.train(cfg, run_dir=tmp_path / "whole", quiet=True)
    assert whole["status"] == "completed" and whole["precision"] == "fp16"
    assert math.isfinite(whole["test"]["loss"]) and whole["test"]["accuracy"] > 0.3
    with monkeypatch.context() as patch:
        stop_after(patch, 15 + 1 + 6)  # step 6 of epoch 2 (15 steps an epoch)
        assert tv.train(cfg, run_dir=tmp_path / "resumed", quiet=True)["status"] == "interrupted"
    scaler = load_state(tmp_path / "resumed" / runs.CHECKPOINT)["entries"][0]["scaler"]
    assert scaler["scale"] > 0 and scaler["_growth_tracker"] >= 0
    resumed = tv.train(cfg, run_dir=tmp_path / "resumed", quiet=True, resume=True)
    assert resumed["status"] == "completed"
    mine, ref = (load_weights(tmp_path / name / runs.WEIGHTS)[0] for name in ("resumed", "whole"))
    assert all(torch.equal(mine[k], ref[k]) for k in ref)
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "whole")
    assert resumed["test"]["loss"] == whole["test"]["loss"]


@pytest.mark.gpu
def test_torchrun_with_nccl_runs_or_refuses_in_one_line(tmp_path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "tinyvision.cli", "train", "--dataset", "digits", "--model", "digits-mlp", "--epochs", "2",
           "--device", "cuda", "--quiet", "--no-report", "--run-dir", str(tmp_path / "run")]
    env = {**os.environ, "TINYVISION_DIST_TIMEOUT": "60"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if torch.cuda.device_count() >= 2:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert runs.read_result(tmp_path / "run")["status"] == "completed"
    else:
        assert proc.returncode != 0
        assert "NCCL needs one GPU per process: use device=cpu (gloo)" in proc.stderr


def test_jobs_workers_spread_over_the_visible_gpus(monkeypatch) -> None:
    """--jobs N: worker i takes cuda:i % count for runs that ask for auto/cuda; explicit devices stay."""
    import torch

    from tinyvision.experiments import pool

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pool.worker_device("auto") == "auto"  # not in a worker: unchanged
    picked = []
    for index in range(4):
        monkeypatch.setattr(pool, "_index", index)
        picked.append(pool.worker_device("auto"))
    assert picked == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert pool.worker_device("cpu") == "cpu" and pool.worker_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pool.worker_device("auto") == "auto"


def test_runs_on_the_same_data_share_the_normalisation_statistics() -> None:
    from tinyvision.config import make_config
    from tinyvision.data.cached import run_normalization
    from tinyvision.data.loader import Normalization

    a, b = (run_normalization(make_config(dataset="digits", seed=s, lr=0.01 * (s + 1))) for s in (0, 1))
    assert a is b  # computed once for both runs
    assert a == Normalization.from_split(tv_load(make_config(dataset="digits")).train)
    assert run_normalization(make_config(dataset="digits", train_subset=100)) != a


def tv_load(cfg):
    from tinyvision.data import load_data

    return load_data(cfg)
