"""A look at the data: describe() against the arrays themselves, the figure and its PNG, show() on
registered, folder: and npz: datasets, and the run report's data grid."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from tinyvision.data import load_dataset
from tinyvision.data.loader import Normalization
from tinyvision.dataview import DatasetView, show
from tinyvision.errors import ConfigError, DataError, UnknownNameError
from tinyvision.report.build import run_document, write_report
from tinyvision.report.dataset import (DATA_GRID, describe, format_description, grid_rows, pixel_histograms,
                                       plot_dataset, write_data_grid)
from tinyvision.report.load import RunRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIGIT_CLASSES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


# ---------------------------------------------------------------------------------------- describe


def test_describe_digits_counts_and_pixels_match_the_arrays(digits):
    from sklearn.datasets import load_digits

    ref = load_digits()  # the catalog's fixed split: rows 0-999 train, 1000-1349 val, 1350-1796 test
    desc = describe(digits)
    assert desc["sizes"] == {"train": 1000, "val": 350, "test": 447} and sum(desc["sizes"].values()) == 1797
    for split, rows in (("train", slice(0, 1000)), ("val", slice(1000, 1350)), ("test", slice(1350, 1797))):
        assert desc["counts"][split] == dict(zip(DIGIT_CLASSES, np.bincount(ref.target[rows], minlength=10).tolist()))
    exact = {"train": [99, 102, 100, 104, 98, 100, 101, 99, 98, 99], "val": [36, 34, 34, 34, 35, 37, 33, 36, 35, 36],
             "test": [43, 46, 43, 45, 48, 45, 47, 44, 41, 45]}
    assert {split: list(counts.values()) for split, counts in desc["counts"].items()} == exact
    assert desc["input_shape"] == [1, 8, 8] and desc["pixel_max"] == 16.0 and desc["classes"] == DIGIT_CLASSES
    (gray,) = desc["channels"]
    train = ref.images[:1000]
    assert gray["channel"] == "gray" and (gray["min"], gray["max"]) == (0.0, 16.0)
    assert gray["mean"] == pytest.approx(train.mean(), rel=1e-12)
    assert gray["std"] == pytest.approx(train.std(ddof=1), rel=1e-12)
    norm = Normalization.from_split(digits.train)  # the statistics normalize: dataset trains with
    assert (gray["mean"], gray["std"]) == pytest.approx((norm.mean[0], norm.std[0]), rel=1e-12)
    json.dumps(desc)  # plain numbers and strings: a run directory or a notebook can keep it


def test_channel_statistics_in_chunks_match_one_pass(monkeypatch):
    from tinyvision.report import dataset

    images = torch.randint(0, 256, (37, 3, 5, 4), dtype=torch.uint8)
    monkeypatch.setattr(dataset, "_CHUNK", 45)  # 2 rows a chunk: the two-pass sums cross chunks
    stats = dataset._channel_stats(images)
    x = images.to(torch.float64)
    for k, s in enumerate(stats):
        assert (s["min"], s["max"]) == (float(x[:, k].min()), float(x[:, k].max()))
        assert (s["mean"], s["std"]) == pytest.approx((float(x[:, k].mean()), float(x[:, k].std())), rel=1e-12)


def test_format_description_is_a_short_table(digits):
    text = format_description(describe(digits))
    lines = text.splitlines()
    assert lines[0] == "digits: 10 classes, input 1x8x8, train 1,000 / val 350 / test 447 images"
    assert re.search(r"^total\s+1,000\s+350\s+447$", text, re.M)
    assert re.search(r"^0\s+99\s+36\s+43$", text, re.M)  # class 0
    assert re.search(r"^gray\s+0\s+16\s+\d+\.\d{4}\s+\d+\.\d{4}$", text, re.M)
    assert "white = 16" in text and len(lines) < 30


# ---------------------------------------------------------------------------------------- figure


def test_grid_rows_take_a_few_of_each_class_in_order():
    labels = np.array([0] * 20 + [2, 2] + [0] * 5 + [3])  # class 1 has no image
    rows = grid_rows(labels, num_classes=4, n=8)
    assert rows == [0, 1, 2, 3, 4, 20, 21, 27]  # every class first; then the earliest rows of the rest
    assert grid_rows(labels, 4, n=100) == sorted(range(len(labels)), key=lambda i: (labels[i], i))
    assert grid_rows(torch.tensor(labels), 4, n=8) == rows


def test_digits_figure_has_64_labelled_images_and_a_histogram(digits):
    fig = plot_dataset(digits)
    axes = image_axes(fig)
    titles = [ax.get_title() for ax in axes]
    assert len(axes) == 64 and titles == sorted(titles)  # grouped by class
    per_class = {c: titles.count(c) for c in DIGIT_CLASSES}
    assert sorted(per_class.values()) == [6] * 6 + [7] * 4  # round-robin: 64 over 10 classes
    for ax, row in zip(axes, grid_rows(digits.train.labels, 10)):
        assert ax.get_title() == str(int(digits.train.labels[row]))
        np.testing.assert_allclose(ax.images[0].get_array(), digits.train.images[row, 0].numpy() / 16, atol=1e-6)
    (hist,) = [ax for ax in fig.axes if not ax.images]
    assert hist.get_yscale() == "log" and "pixel value" in hist.get_xlabel()
    edges, counts = pixel_histograms(digits.train.images)
    assert counts.shape == (1, 17) and counts.sum() == 1000 * 64 and list(edges[[0, -1]]) == [-0.5, 16.5]
    assert counts[0].tolist() == np.bincount(digits.train.images.numpy().ravel(), minlength=17).tolist()


def test_write_data_grid_writes_a_png_atomically(digits, tmp_path):
    path = write_data_grid(digits, tmp_path / DATA_GRID)
    assert path == tmp_path / "data-grid.png" and path.read_bytes().startswith(PNG_MAGIC)
    with Image.open(path) as img:
        assert img.format == "PNG" and 600 <= img.width <= 2000 and 800 <= img.height <= 2500
        assert np.asarray(img.convert("L")).std() > 10  # drawn on, not a blank canvas
    assert [p.name for p in tmp_path.iterdir()] == ["data-grid.png"]  # no temporary file left


def test_float_images_get_64_bins_over_their_range():
    images = torch.linspace(-1.0, 3.0, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    edges, counts = pixel_histograms(images)
    assert counts.shape == (3, 64) and counts.sum() == images.numel()
    assert (edges[0], edges[-1]) == pytest.approx((-1.0, 3.0))


# ---------------------------------------------------------------------------------------- show()


def write_folder(root: Path, colors: dict[str, tuple[int, int, int]], per_class: int = 5) -> Path:
    for name, color in colors.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (10, 12), color).save(root / name / f"{i}.png")
    return root


def test_show_a_folder_dataset(tmp_path):
    colors = {"cat": (200, 10, 30), "dog": (20, 100, 250)}
    root = write_folder(tmp_path / "pets", colors)
    view = show(f"folder:{root}", image_size=8)
    assert isinstance(view, DatasetView) and view.data.input_shape == (3, 8, 8)
    assert {c: sum(view.counts[s][c] for s in view.counts) for c in colors} == {"cat": 5, "dog": 5}
    assert sum(view.counts["test"].values()) == 2  # 20% held out
    present = [c for c in colors if view.counts["train"][c]]
    for k, channel in enumerate(view.description["channels"]):  # one colour per class, resized: still uniform
        assert channel["channel"] == "RGB"[k]
        assert (channel["min"], channel["max"]) == (min(colors[c][k] for c in present),
                                                    max(colors[c][k] for c in present))
    text = repr(view)
    assert text.startswith(f"folder:{root}: 2 classes, input 3x8x8") and "cat" in text and "dog" in text
    assert isinstance(view.figure, Figure) and len(image_axes(view.figure)) == len(view.data.train)
    html = view._repr_html_()
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1))
    assert png.startswith(PNG_MAGIC) and "<table>" in html and "cat" in html


def test_show_an_npz_dataset_with_config_fields(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    path = tmp_path / "blobs.npz"
    np.savez(path, x=rng.integers(0, 256, (60, 6, 6), dtype=np.uint8), y=y)
    view = show({"dataset": f"npz:{path}"}, val_size=0.25)
    assert view.description["sizes"] == {"train": 36, "val": 12, "test": 12}  # 20% test, then 25% of 48
    totals = {c: sum(view.counts[s][c] for s in view.counts) for c in view.data.classes}
    assert totals == {"0": 20, "1": 20, "2": 20}
    assert view.description["input_shape"] == [1, 6, 6] and view.description["channels"][0]["channel"] == "gray"


def test_show_refuses_what_is_not_a_dataset_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="expected a dataset name, a dict of config fields or a RunConfig"):
        show(3)
    with pytest.raises(UnknownNameError) as err:
        show("mnits")
    assert "\n" not in str(err.value) and "mnist" in str(err.value)


def test_an_unreadable_image_is_one_line_naming_the_file(tmp_path):
    root = write_folder(tmp_path / "pets", {"cat": (1, 2, 3), "dog": (4, 5, 6)}, per_class=3)
    bad = root / "dog" / "broken.png"
    bad.write_bytes(PNG_MAGIC + b"not really")
    for load in (lambda: load_dataset(f"folder:{root}"), lambda: show(f"folder:{root}")):
        with pytest.raises(DataError) as err:
            load()
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{bad}: expected a PNG/JPEG image")
        assert "skip_bad_images" in message


# ---------------------------------------------------------------------------------------- the run report


def test_the_run_report_shows_the_data_grid_when_the_run_wrote_one(digits, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"status": "running", "dataset": "digits"}))
    assert "data_grid" not in [p.name for p in run_document(RunRecord(run, [], {})).plots]
    write_data_grid(digits, run / DATA_GRID)
    html_path, md_path = write_report(run)
    assert (run / "plots" / "data_grid.png").read_bytes() == (run / DATA_GRID).read_bytes()
    encoded = base64.b64encode((run / DATA_GRID).read_bytes()).decode()
    assert encoded in html_path.read_text() and "(plots/data_grid.png)" in md_path.read_text()


def test_a_damaged_data_grid_is_named(tmp_path):
    (tmp_path / DATA_GRID).write_bytes(b"GIF89a")
    problems: list[str] = []
    doc = run_document(RunRecord(tmp_path, [], {}), problems=problems)
    assert problems == [f"data grid ({tmp_path / DATA_GRID} is not a PNG file)"]
    assert "data_grid" not in [p.name for p in doc.plots]
