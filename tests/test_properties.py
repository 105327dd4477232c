"""Property-based tests: every parser, fed random bytes and mutations of valid files (truncations,
bit flips, header edits, spliced garbage), either parses or raises a one-line TinyVisionError naming
the file, within a memory bound; random configs validate or raise ConfigError.

Checks are explicit raises, not `assert`, so that test_reliability can run this module under
`python -O` with an address-space limit (TINYVISION_TEST_MEMORY_MB) as well.
"""
from __future__ import annotations

import gzip
import io
import os
import sys
import tarfile
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import scipy.io
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tinyvision.files import load_state, load_weights, save_state, save_weights
from tinyvision.config import NUMERIC_FIELDS, RunConfig, dump_config, make_config
from tinyvision.data.formats import parse_idx, read_cifar10_tar, read_idx, read_image_folder, read_npz, \
    read_svhn_mat
from tinyvision.errors import ConfigError, TinyVisionError
from tinyvision.inference import load_model, read_image
from tinyvision.models import create_model

EXAMPLES = int(os.environ.get("TINYVISION_TEST_EXAMPLES", "60"))  # per parser and seed file
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
TRACED_LIMIT = 64 << 20  # bytes of Python/numpy memory one parse may hold at its peak
TRIED: Counter = Counter()  # parser -> malformed inputs tried (printed at the end)


def _limit_address_space() -> None:
    """Under TINYVISION_TEST_MEMORY_MB, cap this process's address space at what it maps now plus
    that many MiB: a parser that believes a header's size claim dies of MemoryError."""
    headroom = os.environ.get("TINYVISION_TEST_MEMORY_MB")
    if not headroom:
        return
    import resource

    Image.init()  # map every lazily imported plugin first
    status = Path("/proc/self/status").read_text()
    vm_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmSize:")))
    limit = (vm_kib << 10) + (int(headroom) << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


_limit_address_space()


def test_memory_limit_is_in_force() -> None:
    """When the address space is capped, allocating past the cap fails (so the cap means something)."""
    headroom = os.environ.get("TINYVISION_TEST_MEMORY_MB")
    if not headroom:
        pytest.skip("no TINYVISION_TEST_MEMORY_MB: no address-space limit in this process")
    with pytest.raises(MemoryError):
        bytearray(2 * (int(headroom) << 20))
    print(f"\naddress space capped at {headroom} MiB above start-up; python -O: {sys.flags.optimize}")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def refuses_cleanly(name: str, parse: Callable[[], Any], path: Path | str) -> None:
    """parse() succeeds or raises a one-line TinyVisionError naming `path`; traced peak bounded."""
    TRIED[name] += 1
    tracemalloc.start()
    try:
        parse()
    except TinyVisionError as exc:
        text = str(exc)
        check("\n" not in text and text.strip() == text and text, f"not one line: {text!r}")
        check(str(path) in text, f"{text!r} does not name {path}")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    check(peak < TRACED_LIMIT, f"{name}: {peak / 2**20:.0f} MiB held while parsing")


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    print(f"\nhypothesis: {sum(TRIED.values())} malformed inputs tried: {dict(sorted(TRIED.items()))}")


# --- mutations ---------------------------------------------------------------------------------

def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, bit in flips:
        out[pos % len(out)] ^= 1 << bit
    return bytes(out)


def _poke(data: bytes, pos: int, value: int, width: int, order: str) -> bytes:
    """Overwrite `width` bytes at pos with an integer: a header field now claims something else."""
    pos %= max(1, min(len(data), 1024))
    return data[:pos] + value.to_bytes(8, order)[-width:] + data[pos + width:]


def mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    n = len(valid)
    return st.one_of(
        st.integers(0, n - 1).map(lambda k: valid[:k]),  # truncated
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 7)), min_size=1, max_size=6)
        .map(lambda flips: _flip(valid, flips)),  # bit flips anywhere
        st.lists(st.tuples(st.integers(0, 63), st.integers(0, 7)), min_size=1, max_size=4)
        .map(lambda flips: _flip(valid, flips)),  # bit flips in the header
        st.tuples(st.integers(0, 1023), st.sampled_from([0, 1, 255, 2**31 - 1, 2**32 - 1, 2**63 - 1,
                                                          2**64 - 1]) | st.integers(0, 2**64 - 1),
                  st.sampled_from([1, 2, 4, 8]), st.sampled_from(["big", "little"]))
        .map(lambda a: _poke(valid, *a)),  # header fields edited: sizes, counts, types
        st.tuples(st.integers(0, n), st.integers(0, n), st.binary(max_size=64))
        .map(lambda a: valid[:min(a[0], a[1])] + a[2] + valid[max(a[0], a[1]):]),  # spliced garbage
        st.binary(max_size=256),  # anything
    )


def mutated_files(seeds: dict[str, bytes]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(seed name, mutated bytes) over every seed file."""
    return st.sampled_from(sorted(seeds)).flatmap(lambda k: st.tuples(st.just(k), mutations(seeds[k])))


# --- seed files: small valid files in each format --------------------------------------------

def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


RNG = np.random.default_rng(0)
IDX_SEEDS = {"images": _idx(RNG.integers(0, 256, (3, 4, 5), dtype=np.uint8)),
             "labels": _idx(np.arange(7, dtype=np.uint8))}


def _mat(compress: bool) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"X": RNG.integers(0, 256, (32, 32, 3, 2), dtype=np.uint8),
                           "y": np.array([[3], [10]], dtype=np.uint8)}, do_compression=compress)
    return buf.getvalue()


MAT_SEEDS = {"plain": _mat(False), "compressed": _mat(True)}


def _tar() -> bytes:
    buf = io.BytesIO()
    members = {"cifar-10-batches-bin/batches.meta.txt": b"a\nb\nc\n"}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        members[f"cifar-10-batches-bin/{name}.bin"] = bytes([1]) + bytes(RNG.integers(0, 256, 3072, dtype=np.uint8))
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TAR_SEED = _tar()


def _npz(compressed: bool) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(
        buf, x=RNG.integers(0, 256, (4, 1, 4, 4), dtype=np.uint8), y=np.arange(4))
    return buf.getvalue()


NPZ_SEEDS = {"npz": _npz(False), "npz-compressed": _npz(True)}


def _image(fmt: str, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


IMAGE_SEEDS = {"png": _image("PNG", "L"), "png-rgb": _image("PNG", "RGB"), "jpeg": _image("JPEG", "RGB"),
               "bmp": _image("BMP", "RGB"), "gif": _image("GIF", "P"), "tiff": _image("TIFF", "RGB")}
SUFFIX = {"png": ".png", "png-rgb": ".png", "jpeg": ".jpg", "bmp": ".bmp", "gif": ".gif", "tiff": ".tif"}


def _tensor_files(folder: Path) -> dict[str, bytes]:
    net = create_model("mlp:16", (1, 8, 8), 10)
    meta = {"model": "mlp:16", "spec": "mlp:16", "overrides": {}, "input_shape": [1, 8, 8],
            "classes": list("0123456789"), "num_classes": 10, "mean": [0.5], "std": [0.25], "pixel_max": 16.0}
    save_weights(folder / "w.safetensors", net.state_dict(), meta)
    save_state(folder / "s.safetensors", {"model": net.state_dict(), "epoch": 3, "step": 0, "best_loss": float("inf"),
                                          "history": [{"epoch": 1, "lr": 0.1}], "rng": torch.get_rng_state(),
                                          "t": (1, None, "x")})
    torch.save(net.state_dict(), folder / "w.pt")
    return {name: (folder / name).read_bytes() for name in ("w.safetensors", "s.safetensors", "w.pt")}


with tempfile.TemporaryDirectory() as _folder:
    TENSOR_SEEDS = _tensor_files(Path(_folder))


# --- parsers -----------------------------------------------------------------------------------

@settings(**SETTINGS)
@given(mutated_files(IDX_SEEDS), st.sampled_from([None, 1, 3]))
def test_parse_idx_mutations(case: tuple[str, bytes], ndim: int | None) -> None:
    refuses_cleanly("parse_idx", lambda: parse_idx(case[1], source="fuzz.idx", ndim=ndim), "fuzz.idx")


@settings(**SETTINGS)
@given(mutated_files(IDX_SEEDS), st.booleans(), st.booleans())
def test_read_idx_mutations(tmp_path: Path, case: tuple[str, bytes], gzipped: bool, mutate_gzip: bool) -> None:
    data = gzip.compress(case[1]) if gzipped else case[1]
    if gzipped and mutate_gzip:  # the compressed stream itself damaged: cut in half
        data = data[: len(data) // 2]
    path = tmp_path / "fuzz-idx1-ubyte"
    path.write_bytes(data)
    refuses_cleanly("read_idx", lambda: read_idx(path, ndim=1 if case[0] == "labels" else 3), path)


@settings(**SETTINGS)
@given(mutated_files(MAT_SEEDS))
def test_read_svhn_mat_mutations(tmp_path: Path, case: tuple[str, bytes]) -> None:
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(case[1])
    refuses_cleanly("read_svhn_mat", lambda: read_svhn_mat(path), path)


@settings(**SETTINGS)
@given(mutations(TAR_SEED), st.booleans())
def test_read_cifar10_tar_mutations(tmp_path: Path, data: bytes, gzipped: bool) -> None:
    path = tmp_path / "cifar-10-binary.tar.gz"
    path.write_bytes(gzip.compress(data) if gzipped else data)
    refuses_cleanly("read_cifar10_tar", lambda: read_cifar10_tar(path), path)


@settings(**SETTINGS)
@given(mutated_files(NPZ_SEEDS))
def test_read_npz_mutations(tmp_path: Path, case: tuple[str, bytes]) -> None:
    path = tmp_path / "fuzz.npz"
    path.write_bytes(case[1])
    refuses_cleanly("read_npz", lambda: read_npz(path), path)


@settings(**SETTINGS)
@given(mutated_files(IMAGE_SEEDS))
def test_read_image_mutations(tmp_path: Path, case: tuple[str, bytes]) -> None:
    path = tmp_path / f"fuzz{SUFFIX[case[0]]}"
    path.write_bytes(case[1])
    refuses_cleanly("inference.read_image", lambda: read_image(path, (1, 8, 8), 16.0), path)


@settings(**SETTINGS)
@given(mutated_files({k: v for k, v in IMAGE_SEEDS.items() if SUFFIX[k] in (".png", ".jpg")}), st.sampled_from([1, 3]))
def test_read_image_folder_mutations(tmp_path: Path, case: tuple[str, bytes], channels: int) -> None:
    path = tmp_path / "root" / "cls" / f"fuzz{SUFFIX[case[0]]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.iterdir():
        old.unlink()
    path.write_bytes(case[1])
    refuses_cleanly("read_image_folder", lambda: read_image_folder(tmp_path / "root", size=8, channels=channels),
                    path)


@settings(**SETTINGS)
@given(st.data())
def test_state_and_weights_mutations(tmp_path: Path, data: st.DataObject) -> None:
    name, raw = data.draw(mutated_files(TENSOR_SEEDS))
    path = tmp_path / name
    path.write_bytes(raw)
    if name == "s.safetensors":
        refuses_cleanly("load_state", lambda: load_state(path), path)
    elif name == "w.pt":  # only with --trust-pickle, and then weights_only=True
        refuses_cleanly("load_weights(.pt)", lambda: load_weights(path, trust_pickle=True), path)
    else:
        refuses_cleanly("load_weights", lambda: load_weights(path), path)
        refuses_cleanly("load_model", lambda: load_model(path), path)


@settings(**SETTINGS)
@given(st.binary(max_size=512), st.sampled_from(["x.safetensors", "x.pt", "model.safetensors"]))
def test_random_bytes_as_tensor_files(tmp_path: Path, raw: bytes, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(raw)
    refuses_cleanly("load_state", lambda: load_state(path), path)
    refuses_cleanly("load_weights", lambda: load_weights(path, trust_pickle=True), path)


# --- configs -----------------------------------------------------------------------------------

VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(-3, 300),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                   st.sampled_from(["sgd", "adam", "cosine", "relu", "digits", "mlp:32", "auto", "cpu", "1e-3"]),
                   st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
FIELDS = st.sampled_from(list(RunConfig.model_fields)) | st.text(min_size=1, max_size=10)


@settings(**SETTINGS)
@given(st.dictionaries(FIELDS, VALUES, max_size=6))
def test_random_configs_validate_or_raise_config_error(values: dict[str, Any]) -> None:
    TRIED["config"] += 1
    try:
        cfg = make_config(values)
    except ConfigError as exc:
        text = str(exc)
        check("\n" not in text, f"not one line: {text!r}")
        check(any(repr(str(k)) in text or str(k) in text for k in values), f"{text!r} names no field of {values}")
        return
    numeric_booleans = [k for k in NUMERIC_FIELDS if isinstance(values.get(k), bool)]
    check(not numeric_booleans, f"{values}: a boolean was read as a number for {numeric_booleans}")
    # what validates is saved and read back unchanged (config.yaml of a run)
    check(make_config(yaml.safe_load(dump_config(cfg))) == cfg, f"{values} does not round-trip")
