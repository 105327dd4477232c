"""Shared fixtures. Real MNIST/Fashion-MNIST files come from $TINYVISION_TEST_DATA (a folder
holding mnist/ and fashion-mnist/ in the original IDX format); tests never download."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

os.environ["TINYVISION_OFFLINE"] = "1"  # no test may reach the network

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
