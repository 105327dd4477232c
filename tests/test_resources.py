"""Out of disk space or device memory: the run is marked failed with one line, nothing written is
lost, and it resumes once there is room. A split that cannot fit on the GPU is refused up front."""
from __future__ import annotations

import errno

import pytest
import torch

import tinyvision as tv
from tinyvision import files, runs
from tinyvision.cli import main
from tinyvision.data.loader import check_fits

CFG = dict(dataset="digits", model="digits-mlp", epochs=3, threads=1, train_subset=300)


def fill_disk_at(monkeypatch: pytest.MonkeyPatch, name: str, on_call: int) -> None:
    """atomic_write of `name` raises ENOSPC from its `on_call`-th call on, as a full disk does."""
    real, calls = files.atomic_write, {"n": 0}

    def full(path, data) -> None:
        if str(path).endswith(name):
            calls["n"] += 1
            if calls["n"] >= on_call:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(files, "atomic_write", full)


@pytest.mark.slow
def test_a_full_disk_marks_the_run_failed_in_one_line_and_it_resumes_later(tmp_path, monkeypatch, capsys) -> None:
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        fill_disk_at(patch, runs.CHECKPOINT, on_call=2)  # the checkpoint after epoch 2 does not fit
        rc = main(["train", "--run-dir", str(run_dir), "--quiet", "--no-report",
                   *(f"{k}={v}" for k, v in CFG.items())])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "no space left to write checkpoint.safetensors" in err and "--resume" in err
    result = runs.read_result(run_dir)
    assert result["status"] == "failed" and "No space left on device" in result["reason"]
    assert files.load_state(run_dir / runs.CHECKPOINT)["epoch"] == 1  # the last checkpoint that fitted
    resumed = tv.train(CFG, run_dir=run_dir, quiet=True, resume=True)
    assert resumed["status"] == "completed" and resumed["epochs_run"] == 3


def test_out_of_device_memory_marks_the_run_failed(tmp_path, monkeypatch) -> None:
    from tinyvision import pipeline

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(pipeline, "train_loop", no_memory)
    with pytest.raises(runs.ResourceError, match="out of device memory; use a smaller batch_size"):
        tv.train(CFG, run_dir=tmp_path / "run", quiet=True)
    assert runs.read_result(tmp_path / "run")["status"] == "failed"


def test_other_os_errors_keep_their_traceback(tmp_path, monkeypatch) -> None:
    from tinyvision import pipeline

    def broken(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(pipeline, "train_loop", broken)
    with pytest.raises(PermissionError):
        tv.train(CFG, run_dir=tmp_path / "run", quiet=True)


def test_a_split_larger_than_free_gpu_memory_is_refused_with_the_figures(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * 2**30, 16 * 2**30))
    check_fits(1 * 2**30, torch.device("cuda:0"))  # 1 GiB of 2 GiB free: fits
    with pytest.raises(tv.DataError, match=r"needs 3.00 GiB on cuda:0 but only 2.00 GiB of 16.00 GiB is free"):
        check_fits(3 * 2**30, torch.device("cuda:0"))
    check_fits(10**15, torch.device("cpu"))  # the CPU is not checked
