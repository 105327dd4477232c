"""The dataset catalog, splits and file fetching; real MNIST / Fashion-MNIST when provided."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyvision.data import (DATASETS, ImageDataset, RemoteFile, data_root, dataset_info,
                             dataset_status, ensure_files, list_datasets, load_dataset)
from tinyvision.data import fetch
from tinyvision.errors import ConfigError, DataError, UnknownNameError


@pytest.fixture
def _shared() -> Path:
    """The shared real data sets (env TINYVISION_TEST_DATA); skip when absent."""
    root = os.environ.get("TINYVISION_TEST_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("TINYVISION_TEST_DATA not set or missing")
    return Path(root)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Nothing downloads in tests: a pooch call fails loudly unless a test replaces it."""
    import pooch

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(pooch, "retrieve", refuse)
    monkeypatch.delenv("TINYVISION_OFFLINE", raising=False)


def idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) \
        + arr.astype(np.uint8).tobytes()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ---------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", list_datasets())
def test_every_entry_is_consistent(name):
    info = dataset_info(name)
    assert info.name == name and info.description and info.source
    assert len(info.input_shape) == 3 and info.input_shape[0] in (1, 3)
    assert len(info.classes) == len(set(info.classes)) >= 2
    assert set(info.sizes) >= {"train", "test"}
    for f in info.files:
        assert len(f.md5) == 32 and f.urls and all(u.endswith(f.name) for u in f.urls)
    status = dataset_status(name)
    assert status["train"] + status["val"] == info.sizes["train"]


@pytest.mark.parametrize("name", [n for n in list_datasets() if dataset_info(n).files])
def test_every_entry_names_missing_files(tmp_path, name):
    info = dataset_info(name)
    status = dataset_status(name, data_dir=tmp_path)
    assert not status["ready"] and not any(f["present"] for f in status["files"])
    with pytest.raises(DataError) as err:
        load_dataset(name, data_dir=tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg and "download=False" in msg
    for f in info.files_for(info.options):
        assert f.name in msg and f.md5 in msg and str(tmp_path / info.files_folder / f.name) in msg
        assert all(u in msg for u in f.urls)
    assert not (tmp_path / info.files_folder).exists()  # nothing written


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean 'mnist'"):
        dataset_info("mnsit")
    with pytest.raises(UnknownNameError, match="folder:PATH"):
        load_dataset("fashion_mnist")
    assert list_datasets("*mnist") == ["fashion-mnist", "mnist"]


# ---------------------------------------------------------------------------------------- digits


def test_digits_fixed_split():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", seed=123)
    assert isinstance(ds, ImageDataset) and ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1000, 350, 447)
    assert ds.train.images.dtype == torch.uint8 and int(ds.train.images.max()) == 16
    ref = load_digits()
    np.testing.assert_array_equal(ds.train.images[:, 0].numpy(), ref.images[:1000])
    np.testing.assert_array_equal(ds.val.labels.numpy(), ref.target[1000:1350])
    np.testing.assert_array_equal(ds.test.labels.numpy(), ref.target[1350:])


def test_image_size_only_for_folders():
    with pytest.raises(ConfigError, match="image_size applies only to folder"):
        load_dataset("digits", image_size=16)


@pytest.mark.parametrize("val_size", [-5, 0.0, 1.0, 1.5, True, "10", 1350])
def test_val_size_out_of_range(val_size):
    with pytest.raises(ConfigError, match="val_size"):
        load_dataset("digits", val_size=val_size)


def test_val_size_zero_keeps_every_training_image():
    data = load_dataset("digits", val_size=0)
    assert len(data.val) == 0 and len(data.train) == 1797 - 447 and len(data.test) == 447


# ---------------------------------------------------------------------------------------- carve


def write_npz(path: Path, n: int = 50, **extra) -> None:
    x = np.arange(n, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)  # row i is all i
    np.savez(path, x=x, y=np.arange(n) % 3, **extra)


def test_val_carve_deterministic_disjoint(tmp_path):
    write_npz(tmp_path / "d.npz")
    name = f"npz:{tmp_path / 'd.npz'}"
    a, b = load_dataset(name, seed=1), load_dataset(name, seed=1)
    c = load_dataset(name, seed=2, val_size=7)
    rows = lambda split: split.images[:, 0, 0, 0].tolist()  # noqa: E731  (the row id)
    assert rows(a.val) == rows(b.val) and rows(a.train) == rows(b.train)
    assert len(a.test) == 10 and len(a.val) == 4 and len(a.train) == 36 and len(c.val) == 7
    assert set(rows(a.val)).isdisjoint(rows(a.train))
    assert sorted(rows(a.val) + rows(a.train) + rows(a.test)) == list(range(50))
    assert rows(c.test) == rows(a.test)  # the held-out test split does not move with the seed
    assert rows(load_dataset(name, seed=2).val) != rows(a.val)
    assert a.classes == ("0", "1", "2") and a.input_shape == (1, 4, 4)
    assert (a.train.labels == a.train.images[:, 0, 0, 0].long() % 3).all()


def test_npz_with_own_splits(tmp_path):
    x = np.zeros((20, 5, 5, 3), np.float64)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(20) % 4, x_test=x[:6],
             y_test=np.ones(6, np.int64))
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}", val_size=5)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 6)
    assert ds.train.images.dtype == torch.float32 and ds.input_shape == (3, 5, 5)
    assert ds.num_classes == 4


def test_folder_source(tmp_path):
    from PIL import Image

    for split, count in (("train", 10), ("test", 3)):
        for cls in ("b", "a"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (9, 9), (i, 0, 0)).save(tmp_path / split / cls / f"{i}.png")
    ds = load_dataset(f"folder:{tmp_path}", channels=1, image_size=6)
    assert ds.classes == ("a", "b") and ds.input_shape == (1, 6, 6)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 2, 6)
    flat = load_dataset(f"folder:{tmp_path / 'train'}")  # no train/test inside: 20% held out
    assert flat.input_shape == (3, 32, 32) and len(flat.test) == 4 and len(flat.val) == 2


# ---------------------------------------------------------------------------------------- loaders


def test_idx_loader_and_count_mismatch(tmp_path):
    names = {"train-images-idx3-ubyte.gz": np.ones((4, 28, 28)), "train-labels-idx1-ubyte.gz":
             np.arange(4), "t10k-images-idx3-ubyte.gz": np.zeros((2, 28, 28)),
             "t10k-labels-idx1-ubyte.gz": np.arange(3)}
    for name, arr in names.items():
        (tmp_path / name).write_bytes(gzip.compress(idx_bytes(arr)))
    paths = {name: tmp_path / name for name in names}
    with pytest.raises(DataError, match="2 images but .*t10k-labels-idx1-ubyte.gz holds 3 labels"):
        dataset_info("mnist").load(paths, {})


def write_svhn_files(folder: Path, counts: dict[str, int]) -> dict[str, list[int]]:
    """SVHN .mat files in the real layout (X 32x32x3xN uint8, y Nx1, 10 for digit 0) -> digits per split;
    every pixel of an image holds its row (train 0.., extra 100.., test 200..), so each can be traced."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    digits = {}
    for split, n in counts.items():
        offset = ("train", "extra", "test").index(split)
        y = (np.arange(n) + 3 * offset) % 10  # the first train image is a 0, stored as 10
        x = np.broadcast_to((np.arange(n) + 100 * offset).astype(np.uint8), (32, 32, 3, n)).copy()
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": np.where(y == 0, 10, y)[:, None]})
        digits[split] = y.tolist()
    return digits


def with_real_md5s(monkeypatch, name: str, folder: Path) -> None:
    """The entry, with the md5s of the test's own files in place of the published ones."""
    info = dataset_info(name)
    files = tuple(dataclasses.replace(f, md5=md5((folder / f.name).read_bytes()))
                  if (folder / f.name).exists() else f for f in info.files)
    monkeypatch.setitem(DATASETS._entries, name, dataclasses.replace(info, files=files))


def test_svhn_loader_with_extra(tmp_path):
    digits = write_svhn_files(tmp_path, {"train": 3, "test": 2, "extra": 4})
    paths = {p.name: p for p in tmp_path.iterdir()}
    info = dataset_info("svhn")
    plain = info.load(paths, {"svhn_extra": False})
    assert plain["train"][1].tolist() == digits["train"] == [0, 1, 2] and plain["test"][0].shape == (2, 3, 32, 32)
    extra = info.load(paths, {"svhn_extra": True})
    assert extra["train"][1].tolist() == digits["train"] + digits["extra"]
    assert dataset_info("svhn+extra").load(paths, {})["train"][1].tolist() == extra["train"][1].tolist()
    assert [f.name for f in info.files_for({"svhn_extra": False})] == ["train_32x32.mat", "test_32x32.mat"]


def test_svhn_extra_entry_trains_on_train_and_extra_from_svhns_folder(tmp_path, monkeypatch):
    assert {f.name: f.md5 for f in dataset_info("svhn+extra").files} == {  # as torchvision.datasets.SVHN has them
        "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373", "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
        "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7"}
    status = dataset_status("svhn+extra", data_dir=tmp_path)
    assert (status["train"], status["val"], status["test"], status["present"]) == (543949, 60439, 26032, "0/3")
    digits = write_svhn_files(tmp_path / "svhn", {"train": 30, "test": 7, "extra": 50})
    assert [dataset_status(n, data_dir=tmp_path)["present"] for n in ("svhn+extra", "svhn")] == ["3/3", "2/2"]
    with pytest.raises(DataError, match="checksum mismatch"):  # the test's files are not the published ones
        load_dataset("svhn+extra", data_dir=tmp_path, download=False)
    for name in ("svhn", "svhn+extra"):
        with_real_md5s(monkeypatch, name, tmp_path / "svhn")
    svhn = load_dataset("svhn", data_dir=tmp_path, download=False)
    assert (len(svhn.train), len(svhn.val), len(svhn.test)) == (27, 3, 7)  # default val: 10%
    with pytest.raises(ConfigError, match="unknown option 'extra'"):
        load_dataset("svhn", data_dir=tmp_path, options={"extra": True})
    ds = load_dataset("svhn+extra", data_dir=tmp_path, download=False, seed=3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (72, 8, 7)  # as svhn: 10% of train (+ extra)
    assert ds.input_shape == (3, 32, 32) and ds.test.labels.tolist() == digits["test"] == svhn.test.labels.tolist()
    rows = torch.cat([ds.train.images[:, 0, 0, 0], ds.val.images[:, 0, 0, 0]]).long()
    assert sorted(rows.tolist()) == list(range(30)) + list(range(100, 150))  # each train/extra image once
    want = torch.tensor(digits["train"] + digits["extra"])[torch.where(rows >= 100, rows - 70, rows)]
    assert torch.equal(torch.cat([ds.train.labels, ds.val.labels]), want)
    again = load_dataset("svhn+extra", data_dir=tmp_path, download=False, seed=3)
    assert torch.equal(again.val.images, ds.val.images) and not (tmp_path / "svhn+extra").exists()


def test_wrong_kind_of_data_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    arrays = {"train-images-idx3-ubyte.gz": np.zeros((3, 20, 20)), "train-labels-idx1-ubyte.gz":
              np.zeros(3), "t10k-images-idx3-ubyte.gz": np.zeros((1, 20, 20)),
              "t10k-labels-idx1-ubyte.gz": np.zeros(1)}
    for name, arr in arrays.items():
        (folder / name).write_bytes(idx_bytes(arr))  # plain IDX under a .gz name
    with_real_md5s(monkeypatch, "mnist", folder)
    with pytest.raises(DataError, match=r"mnist train: expected images \(1, 28, 28\)"):
        load_dataset("mnist", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------- fetch


CONTENT = idx_bytes(np.arange(60).reshape(3, 4, 5))


@pytest.fixture
def remote() -> RemoteFile:
    served = gzip.compress(CONTENT, mtime=0)
    return RemoteFile("f-idx3-ubyte.gz", ("https://a.example/f-idx3-ubyte.gz",
                                          "https://b.example/f-idx3-ubyte.gz"),
                      md5(served), hashlib.sha256(CONTENT).hexdigest())


def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYVISION_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root(None) == tmp_path / "env"
    monkeypatch.delenv("TINYVISION_DATA")
    assert data_root(None).name == "tinyvision"


@pytest.mark.parametrize("variant", ["served", "rewrapped", "uncompressed"])
def test_present_file_accepted(tmp_path, remote, variant):
    folder = tmp_path / "ds"
    folder.mkdir()
    if variant == "uncompressed":
        (folder / "f-idx3-ubyte").write_bytes(CONTENT)
    else:  # a different gzip header (name, time) changes the md5 but not the content
        mtime = 0 if variant == "served" else 12345
        (folder / remote.name).write_bytes(gzip.compress(CONTENT, mtime=mtime))
    before = sorted(tmp_path.rglob("*"))
    paths = ensure_files("ds", [remote], tmp_path, download=True)  # present: no download
    assert sorted(tmp_path.rglob("*")) == before  # nothing written (the shared folder is read-only)
    expected = "f-idx3-ubyte" if variant == "uncompressed" else remote.name
    assert paths == {remote.name: folder / expected}


def test_wrong_checksum(tmp_path, remote):
    (tmp_path / "ds").mkdir()
    bad = gzip.compress(b"something else")
    (tmp_path / "ds" / remote.name).write_bytes(bad)
    with pytest.raises(DataError) as err:
        ensure_files("ds", [remote], tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'ds' / remote.name}: checksum mismatch")
    assert remote.md5 in msg and remote.content_sha256 in msg and md5(bad) in msg
    assert hashlib.sha256(b"something else").hexdigest() in msg and "\n" not in msg


def test_verification_is_cached(tmp_path, remote, monkeypatch):
    (tmp_path / "ds").mkdir()
    path = tmp_path / "ds" / remote.name
    path.write_bytes(gzip.compress(CONTENT, mtime=0))
    calls = []
    real = fetch._hash_file
    monkeypatch.setattr(fetch, "_hash_file", lambda p, a: calls.append(p) or real(p, a))
    ensure_files("ds", [remote], tmp_path)
    ensure_files("ds", [remote], tmp_path)
    assert len(calls) == 1
    path.write_bytes(gzip.compress(CONTENT, mtime=0) + b"")  # rewritten: new mtime, hashed again
    os.utime(path, ns=(1, 1))
    ensure_files("ds", [remote], tmp_path)
    assert len(calls) == 2


def test_offline_env_blocks_download(tmp_path, remote, monkeypatch):
    monkeypatch.setenv("TINYVISION_OFFLINE", "1")
    with pytest.raises(DataError, match="TINYVISION_OFFLINE=1") as err:
        ensure_files("ds", [remote], tmp_path)
    msg = str(err.value)
    assert f"{remote.name} (md5 {remote.md5} or uncompressed sha256 {remote.content_sha256})" in msg
    assert str(tmp_path / "ds" / remote.name) in msg and remote.urls[1] in msg


def test_download_tries_each_url(tmp_path, remote, monkeypatch):
    import pooch

    tried = []

    def fake_retrieve(url, known_hash, path, fname, progressbar):
        tried.append(url)
        assert known_hash == f"md5:{remote.md5}" and fname == remote.name
        if "a.example" in url:
            raise ConnectionError("mirror down")
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / fname).write_bytes(gzip.compress(CONTENT, mtime=0))
        return str(Path(path) / fname)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    assert ensure_files("ds", [remote], tmp_path) == {remote.name: tmp_path / "ds" / remote.name}
    assert tried == list(remote.urls)


def test_all_downloads_fail_one_message(tmp_path, remote, monkeypatch):
    import pooch

    def fail(url, **kwargs):
        raise OSError(f"no route to\nhost for {url}")

    monkeypatch.setattr(pooch, "retrieve", fail)
    other = dataclasses.replace(remote, name="g.bin", urls=("https://c.example/g.bin",),
                                content_sha256=None)
    with pytest.raises(DataError) as err:
        ensure_files("ds", [remote, other], tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("ds: 2 file(s) missing and download failed")
    assert all(u in msg for u in remote.urls + other.urls)
    assert str(tmp_path / "ds" / "g.bin") in msg and other.md5 in msg


# ---------------------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_mnist(_shared):
    ds = load_dataset("mnist", data_dir=_shared, download=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (55000, 5000, 10000)
    assert ds.input_shape == (1, 28, 28) and ds.classes == tuple("0123456789")
    assert ds.train.images.dtype == torch.uint8 and ds.test.labels.dtype == torch.int64
    assert int(ds.test.labels[0]) == 7
    for split in (ds.train, ds.val, ds.test):
        assert 0 <= int(split.labels.min()) and int(split.labels.max()) == 9
    # the well-known training-set mean pixel, 0.1307, over train + val (= the 60k file)
    total = ds.train.images.sum(dtype=torch.float64) + ds.val.images.sum(dtype=torch.float64)
    assert abs(float(total) / (60000 * 784 * 255) - 0.1307) < 1e-4
    again = load_dataset("mnist", data_dir=_shared, download=False)
    assert torch.equal(again.val.labels, ds.val.labels)


@pytest.mark.slow
def test_real_fashion_mnist(_shared):
    ds = load_dataset("fashion-mnist", data_dir=_shared, download=False, val_size=0.1, seed=3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54000, 6000, 10000)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert int(ds.test.labels.max()) == 9 and int(ds.test.labels.min()) == 0
    assert torch.bincount(ds.test.labels).tolist() == [1000] * 10
    status = dataset_status("fashion-mnist", data_dir=_shared)
    assert status["ready"] and status["present"] == "4/4"
