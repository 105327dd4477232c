"""Shared fixtures. Real MNIST/Fashion-MNIST files come from $TINYVISION_TEST_DATA (a folder
holding mnist/ and fashion-mnist/ in the original IDX format); tests never download.

The suite runs on the CPU, also on a GPU machine: its tolerances and bit-exact checks are the
CPU's, and device=auto would pick the GPU. GPU tests (marked `gpu`) run only when asked for:
`TINYVISION_GPU_TESTS=1 python -m pytest -m gpu` (without `-m gpu` the whole suite would then
see the GPU, and device=auto would train there).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

GPU_TESTS = os.environ.get("TINYVISION_GPU_TESTS") == "1"
if not GPU_TESTS:
    # Read when torch first touches CUDA (lazily, after this); subprocesses the tests start inherit it.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
# as the `tinyvision` command sets it (cli.entry): cuBLAS reads it once, when CUDA starts
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
os.environ["TINYVISION_OFFLINE"] = "1"  # no test may reach the network
# auto settings are not measured in tests (probe.py): a test must not depend on one CPU's speed
# (bf16 is faster on one CPU kind, slower on another); a test of the probe turns it on itself
os.environ["TINYVISION_PROBE"] = "0"

# Property tests explore new random inputs on every local run (that is how they find bugs); CI
# (TINYVISION_CI=1, set by .ci/run) replays a fixed sequence so that a landing is reproducible.
settings.register_profile("ci", derandomize=True)
if os.environ.get("TINYVISION_CI") == "1":
    settings.load_profile("ci")
os.environ.setdefault("MPLBACKEND", "Agg")

_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def shared_data_dir() -> Path | None:
    """$TINYVISION_TEST_DATA, else ../shared/datasets beside the repository, if it exists."""
    path = Path(os.environ.get("TINYVISION_TEST_DATA") or _DEFAULT)
    return path if (path / "mnist").is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real datasets not found: set TINYVISION_TEST_DATA to the folder holding mnist/")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests out of the user's cache: a dataset not found here is a test bug, not a download."""
    monkeypatch.setenv("TINYVISION_DATA", str(tmp_path_factory.getbasetemp() / "data-cache"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; runs only with TINYVISION_GPU_TESTS=1")
    import torch

    if not GPU_TESTS and torch.cuda.is_available():  # something started CUDA before this file ran
        raise pytest.UsageError("tests/conftest.py could not hide the GPUs (CUDA was initialised before it "
                                "ran): run with CUDA_VISIBLE_DEVICES= or TINYVISION_GPU_TESTS=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    reason = ("GPU test: set TINYVISION_GPU_TESTS=1 on a machine with CUDA" if not GPU_TESTS
              else None if torch.cuda.is_available() else "GPU test: no CUDA GPU visible")
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.skip(reason=reason))
