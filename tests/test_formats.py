"""The parsers on small files written by hand in exactly the real formats, and on broken ones."""
from __future__ import annotations

import ast
import gzip
import io
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyvision.data import formats
from tinyvision.data.formats import (npz_splits, parse_idx, read_cifar10_tar, read_idx,
                                     read_image_folder, read_npz, read_svhn_mat)
from tinyvision.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def idx_bytes(arr: np.ndarray, dtype_byte: int = 0x08) -> bytes:
    """The IDX layout: 0, 0, dtype, ndim, then one big-endian uint32 per dim, then the data."""
    head = struct.pack(">BBBB", 0, 0, dtype_byte, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


# ---------------------------------------------------------------------------------------- IDX


def test_parse_idx_images_and_labels():
    images = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    got = parse_idx(idx_bytes(images), source="t", ndim=3)
    assert got.shape == (5, 28, 28) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, images)
    assert got.flags.writeable
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels), source="t", ndim=1), labels)


def test_parse_idx_general_dtype_is_native_endian():
    arr = np.arange(-6, 6, dtype=">i2").reshape(3, 4)
    got = parse_idx(idx_bytes(arr, 0x0B), source="t")
    assert got.dtype == np.int16 and got.dtype.isnative
    np.testing.assert_array_equal(got, np.arange(-6, 6).reshape(3, 4))


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("name", ["images-idx3-ubyte.gz", "images-idx3-ubyte"])
def test_read_idx_detects_gzip_by_magic_not_name(tmp_path, compress, name):
    images = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    raw = idx_bytes(images)
    (tmp_path / name).write_bytes(gzip.compress(raw) if compress else raw)
    np.testing.assert_array_equal(read_idx(tmp_path / name, ndim=3), images)


def test_wrong_magic_names_file_and_expectation():
    data = gzip.compress(idx_bytes(np.zeros((2, 28, 28), np.uint8)))  # forgot to decompress
    with pytest.raises(DataError) as err:
        parse_idx(data, source="mnist/train-images-idx3-ubyte.gz", ndim=3)
    msg = str(err.value)
    assert msg.startswith("mnist/train-images-idx3-ubyte.gz: expected IDX magic 0x00000803")
    assert "(uint8 images)" in msg and "found 0x1f8b08" in msg and "\n" not in msg


def test_labels_file_given_as_images():
    with pytest.raises(DataError, match=r"expected IDX magic 0x00000803 .*found 0x00000801"):
        parse_idx(idx_bytes(np.zeros(4, np.uint8)), source="x", ndim=3)


@pytest.mark.parametrize("cut, what", [(-1, "found 1567 bytes"), (1, "found 1569 bytes")])
def test_length_mismatch(cut, what):
    data = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    data = data[:cut] if cut < 0 else data + b"\0" * cut
    with pytest.raises(DataError, match=f"x: IDX header declares 2x28x28 uint8 .*{what}"):
        parse_idx(data, source="x", ndim=3)


def test_truncated_header():
    data = idx_bytes(np.zeros((2, 28, 28), np.uint8))[:9]
    with pytest.raises(DataError, match="IDX header truncated: expected 16 bytes, found 9"):
        parse_idx(data, source="x")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=f"{path}: expected an IDX file, found only 0 bytes"):
        read_idx(path, ndim=3)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.ones((50, 28, 28), np.uint8)))[:-30])
    with pytest.raises(DataError, match=f"{path}: expected an IDX file .*could not read it"):
        read_idx(path, ndim=3)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="could not read it"):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize("compress", [True, False])
def test_hostile_header_is_rejected_without_allocating(tmp_path, compress):
    # claims 4e9 x 28 x 28 bytes (~3 TB) but holds 10: must fail fast on the length check
    raw = struct.pack(">BBBBIII", 0, 0, 8, 3, 4_000_000_000, 28, 28) + b"\0" * 10
    path = tmp_path / "evil"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(DataError, match="declares 4000000000x28x28"):
        read_idx(path, ndim=3)
    with pytest.raises(DataError, match="declares 4000000000x28x28"):
        parse_idx(raw, source="evil")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_parse_idx_never_raises_anything_but_data_error(data):
    try:
        parse_idx(b"\0\0" + data, source="fuzz")
    except DataError as exc:
        assert "\n" not in str(exc)


def test_no_assert_statements_in_data_modules():
    # asserts vanish under python -O; validation must use real raises
    for path in sorted(Path(formats.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Assert)], path.name


def test_every_parser_is_still_importable_from_formats():
    from tinyvision.data import images, matfile

    assert formats.read_svhn_mat is matfile.read_svhn_mat
    for name in ("IMAGE_SUFFIXES", "is_image_file", "read_image", "read_image_folder", "load_image_folder",
                 "FolderImages", "listing"):
        assert getattr(formats, name) is getattr(images, name), name


# ---------------------------------------------------------------------------------------- SVHN


def write_svhn(path: Path, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # MATLAB layout: H, W, C, N
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 = digit 0
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


def test_svhn_layout_and_zero_label(tmp_path):
    x, y = write_svhn(tmp_path / "train_32x32.mat", n=12)
    images, labels = read_svhn_mat(tmp_path / "train_32x32.mat")
    assert images.shape == (12, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.shape == (12,)
    assert labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # the 10 became 0
    n, c, h, w = 5, 2, 7, 30
    assert images[n, c, h, w] == x[h, w, c, n]
    np.testing.assert_array_equal(images[3].transpose(1, 2, 0), x[..., 3])


def test_svhn_wrong_shape(tmp_path):
    import scipy.io

    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DataError, match=rf"{path}: expected a MATLAB v5 .*found X \(28, 28, 3, 2\)"):
        read_svhn_mat(path)


def test_svhn_label_count_mismatch(tmp_path):
    import scipy.io

    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(DataError, match=r"found y \(3, 1\) for 4 images"):
        read_svhn_mat(path)


def test_svhn_label_out_of_range(tmp_path):
    import scipy.io

    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])})
    with pytest.raises(DataError, match="expected SVHN labels 1..10, found 0..3"):
        read_svhn_mat(path)


@pytest.mark.parametrize("content", [b"", b"not a mat file at all" * 20, "truncate"])
def test_svhn_not_a_mat(tmp_path, content):
    path = tmp_path / "x.mat"
    if content == "truncate":
        write_svhn(path, n=20)
        content = path.read_bytes()[:5000]
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"{path}: expected a MATLAB v5 .mat file"):
        read_svhn_mat(path)


# ---------------------------------------------------------------------------------------- CIFAR


def cifar_records(n: int, first_label: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """n records: label byte, then the R plane, G plane and B plane (32x32 row-major each)."""
    labels = (np.arange(n) + first_label) % 10
    planes = RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    raw = b"".join(bytes([labels[i]]) + planes[i, 0].tobytes() + planes[i, 1].tobytes()
                   + planes[i, 2].tobytes() for i in range(n))
    return raw, labels, planes


CIFAR_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def write_cifar(path: Path, members: dict[str, bytes] | None = None, n: int = 3) -> dict:
    expected = {"train": [], "test": []}
    if members is None:
        members = {"cifar-10-batches-bin/batches.meta.txt": ("\n".join(CIFAR_CLASSES) + "\n\n").encode()}
        for i in range(1, 6):
            raw, y, x = cifar_records(n, first_label=i)
            members[f"cifar-10-batches-bin/data_batch_{i}.bin"] = raw
            expected["train"].append((x, y))
        raw, y, x = cifar_records(n + 1)
        members["cifar-10-batches-bin/test_batch.bin"] = raw
        expected["test"].append((x, y))
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return expected


def test_cifar_plane_order_and_batches(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    expected = write_cifar(path)
    out = read_cifar10_tar(path)
    assert set(out) == {"train", "test"}
    x, y = out["train"]
    assert x.shape == (15, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, np.concatenate([e[0] for e in expected["train"]]))
    np.testing.assert_array_equal(y, np.concatenate([e[1] for e in expected["train"]]))
    tx, ty = out["test"]
    assert tx.shape == (4, 3, 32, 32) and ty.tolist() == [0, 1, 2, 3]
    # byte 1 of a record is the top-left red pixel, byte 1025 the top-left green one
    raw = tarfile.open(path).extractfile("cifar-10-batches-bin/test_batch.bin").read()
    assert tx[0, 0, 0, 0] == raw[1] and tx[0, 1, 0, 0] == raw[1 + 1024]
    assert tx[0, 2, 31, 31] == raw[3072] and tx[0, 0, 0, 1] == raw[2]


def test_cifar_missing_member(tmp_path):
    path = tmp_path / "c.tar.gz"
    write_cifar(path, {"cifar-10-batches-bin/batches.meta.txt": b"a\nb\n"})
    with pytest.raises(DataError, match="expected member cifar-10-batches-bin/data_batch_1.bin"):
        read_cifar10_tar(path)


def test_cifar_bad_record_length(tmp_path):
    path = tmp_path / "c.tar.gz"
    members = {"cifar-10-batches-bin/batches.meta.txt": b"a\nb\n",
               "cifar-10-batches-bin/data_batch_1.bin": b"\0" * 3072}
    write_cifar(path, members)
    with pytest.raises(DataError, match="data_batch_1.bin: expected records of 3073 bytes .*3072"):
        read_cifar10_tar(path)


def test_cifar_label_beyond_meta(tmp_path):
    path = tmp_path / "c.tar.gz"
    raw, _, _ = cifar_records(3, first_label=1)  # labels 1, 2, 3 but only 2 classes named
    members = {"cifar-10-batches-bin/batches.meta.txt": b"a\nb\n"}
    members.update({f"cifar-10-batches-bin/data_batch_{i}.bin": raw for i in range(1, 6)})
    members["cifar-10-batches-bin/test_batch.bin"] = raw
    write_cifar(path, members)
    with pytest.raises(DataError, match="train label 3 but batches.meta.txt names 2 classes"):
        read_cifar10_tar(path)


@pytest.mark.parametrize("content", [b"", b"definitely not a tarball" * 100, "truncate"])
def test_cifar_not_a_tar(tmp_path, content):
    path = tmp_path / "cifar-10-binary.tar.gz"
    if content == "truncate":
        write_cifar(path, n=30)
        content = path.read_bytes()[:20000]
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"{path}: expected the CIFAR-10 binary tar.gz"):
        read_cifar10_tar(path)


# ---------------------------------------------------------------------------------------- folders


def write_folder(root: Path) -> None:
    from PIL import Image

    for cls, color in (("cat", (200, 10, 10)), ("ant", (10, 200, 10))):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20 + i, 16), color).save(root / cls / f"{i}.png")
        Image.new("L", (8, 8), 128).save(root / cls / "gray.jpg", quality=95)
    (root / "cat" / "notes.txt").write_text("ignored: not an image")


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder(tmp_path, channels):
    write_folder(tmp_path)
    x, y, classes = read_image_folder(tmp_path, size=12, channels=channels)
    assert classes == ("ant", "cat")  # sorted folder names
    assert x.shape == (8, channels, 12, 12) and x.dtype == np.uint8
    assert y.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    if channels == 3:
        assert tuple(x[0, :, 5, 5]) == (10, 200, 10)  # ant/0.png, RGB channel order
        assert tuple(x[4, :, 5, 5]) == (200, 10, 10)
    assert abs(int(x[3, 0, 5, 5]) - 128) <= 2  # the JPEG, grey in either mode


def test_image_folder_corrupt_image(tmp_path):
    write_folder(tmp_path)
    bad = tmp_path / "cat" / "1.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=f"{bad}: expected a PNG/JPEG image"):
        read_image_folder(tmp_path, size=8, channels=3)


def test_image_folder_empty(tmp_path):
    with pytest.raises(DataError, match="expected one sub-folder of images per class"):
        read_image_folder(tmp_path, size=8, channels=3)
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="expected PNG/JPEG images, found none"):
        read_image_folder(tmp_path, size=8, channels=3)
    with pytest.raises(ConfigError, match="channels"):
        read_image_folder(tmp_path, size=8, channels=2)


# ---------------------------------------------------------------------------------------- npz


@pytest.mark.parametrize("shape, layout", [((5, 9, 7), "NHW"), ((5, 9, 7, 3), "NHWC"),
                                           ((5, 3, 9, 7), "NCHW")])
def test_npz_layouts(tmp_path, shape, layout):
    x = RNG.integers(0, 256, shape, dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5).reshape(5, 1))
    got, y = read_npz(tmp_path / "d.npz")
    want = {"NHW": lambda: x[:, None], "NHWC": lambda: x.transpose(0, 3, 1, 2),
            "NCHW": lambda: x}[layout]()
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.uint8 and y.tolist() == [0, 1, 2, 3, 4] and y.dtype == np.int64


def test_npz_float_becomes_float32_and_splits(tmp_path):
    x = RNG.random((4, 6, 6))
    np.savez_compressed(tmp_path / "d.npz", x_train=x, y_train=np.zeros(4, np.int32),
                        x_test=x[:2], y_test=np.ones(2, np.int32))
    assert npz_splits(tmp_path / "d.npz") == ("train", "test")
    got, y = read_npz(tmp_path / "d.npz", split="test")
    assert got.dtype == np.float32 and got.shape == (2, 1, 6, 6) and y.tolist() == [1, 1]


@pytest.mark.parametrize("arrays, pattern", [
    ({"x": np.zeros((3, 4, 4))}, r"expected an array 'y' in the .npz, found \['x'\]"),
    ({"x": np.zeros((3, 4, 4)), "y": np.zeros(2, np.int64)}, r"with N = 2 labels, found \(3, 4, 4\)"),
    ({"x": np.zeros((3, 4)), "y": np.zeros(3, np.int64)}, r"found \(3, 4\) float64"),
    ({"x": np.zeros((3, 4, 4)), "y": np.array([0.5, 1, 2])}, "expected integer class labels"),
    ({"x": np.zeros((3, 4, 4)), "y": np.array([-1, 0, 1])}, "expected labels >= 0"),
    ({"x": np.zeros((3, 5, 5, 5)), "y": np.zeros(3, np.int64)}, "expected 1, 3 or 4 channels"),
])
def test_npz_bad_arrays(tmp_path, arrays, pattern):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=pattern):
        read_npz(tmp_path / "d.npz")


def test_npz_refuses_pickled_objects(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match="found object dtype"):
        read_npz(tmp_path / "d.npz")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 broken zip", b"\x93NUMPY plain npy"])
def test_npz_not_an_archive(tmp_path, content):
    (tmp_path / "d.npz").write_bytes(content)
    with pytest.raises(DataError, match=f"{tmp_path / 'd.npz'}: expected an .npz archive"):
        read_npz(tmp_path / "d.npz")


def test_npz_hostile_header(tmp_path):
    # a .npy header claiming 10^12 bytes of data in a tiny entry: refused before allocating
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": (1_000_000, 1000, 1000)})
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + b"\0" * 100)
        zf.writestr("y.npy", buf.getvalue())
    with pytest.raises(DataError, match=r"\[x\]: .npy header declares \(1000000, 1000, 1000\)"):
        read_npz(tmp_path / "d.npz")
