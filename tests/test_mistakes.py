"""Error analysis on your own images: mistakes.csv names the files of a folder dataset's wrongly
classified test images (both folder layouts, skipped bad images), the report grid's captions, and
`predict`-style mistakes on any folder of class sub-folders."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import tinyvision as tv
from tinyvision import mistakes, runs
from tinyvision.data.formats import read_image
from tinyvision.report.grids import plot_prediction_grid, short_name

CLASSES = [str(d) for d in range(10)]
PER_CLASS = 12
FAST = {"model": "mlp:32", "epochs": 2, "image_size": 8, "channels": 1, "threads": 1, "batch_size": 16}


def _digit_pngs(folder: Path, per_class: int, offset: int = 0) -> None:
    """folder/<digit>/<digit>_<n>.png: scikit-learn Digits images as 8x8 grayscale PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in range(10):
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
        picks = np.flatnonzero(digits.target == c)[offset: offset + per_class]
        for n, i in enumerate(picks):
            pixels = (digits.images[i] * (255 / 16)).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / str(c) / f"{c}_{offset + n:03d}.png")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tv.RunResult:
    """A run on a folder without train/ and test/ (20% held out); its model is barely trained, so
    it makes plenty of mistakes."""
    root = tmp_path_factory.mktemp("pets")
    _digit_pngs(root / "images", PER_CLASS)
    return tv.train({**FAST, "dataset": f"folder:{root / 'images'}"}, out=root / "runs", quiet=True)


def _check_rows(rows: list[dict], run: dict) -> None:
    pred = runs.read_predictions(run["run_dir"])
    wrong = int((pred.predicted != pred.labels).sum())
    assert len(rows) == wrong > 0
    assert [r["rank"] for r in rows] == list(range(1, wrong + 1))
    assert [r["confidence"] for r in rows] == sorted((r["confidence"] for r in rows), reverse=True)
    for r in rows:
        path = Path(r["path"])
        assert path.is_file() and path.is_absolute()
        assert path.parent.name == r["true"] != r["predicted"]  # the class folder is the true label
        assert r["top3"].split(";")[0].split()[0] == r["predicted"] and len(r["top3"].split(";")) == 3
        assert r["true"] == pred.classes[int(pred.labels[r["index"]])]
        assert abs(r["confidence"] - float(pred.probs[r["index"]].max())) < 1e-5
        assert abs(r["true_probability"] - float(pred.probs[r["index"], int(pred.labels[r["index"]])])) < 1e-5
    # the named file holds the very image the run tested at that position (the gallery keeps some)
    kept = {int(i): k for k, i in enumerate(pred.index)}
    shown = [r for r in rows if r["index"] in kept]
    assert shown
    for r in shown:
        assert np.array_equal(read_image(r["path"], (8, 8), 1), pred.images[kept[r["index"]]].numpy())


def test_a_folder_run_writes_mistakes_csv_naming_each_file(folder_run: tv.RunResult) -> None:
    path = Path(folder_run["run_dir"]) / mistakes.MISTAKES
    with path.open(newline="") as f:
        assert tuple(csv.DictReader(f).fieldnames) == mistakes.COLUMNS
    _check_rows(mistakes.read_mistakes(folder_run["run_dir"]), folder_run)


def test_train_and_test_folders_with_a_skipped_bad_image(tmp_path: Path) -> None:
    _digit_pngs(tmp_path / "data" / "train", 10)
    _digit_pngs(tmp_path / "data" / "test", 5, offset=10)
    (tmp_path / "data" / "test" / "3" / "3_bad.png").write_bytes(b"not a png")  # left out of the test split
    run = tv.train({**FAST, "dataset": f"folder:{tmp_path / 'data'}", "skip_bad_images": True},
                   out=tmp_path / "runs", quiet=True)
    rows = mistakes.read_mistakes(run["run_dir"])
    _check_rows(rows, run)
    assert all(Path(r["path"]).parent.parent.name == "test" for r in rows)


def test_a_changed_folder_leaves_names_out_rather_than_guessing(tmp_path: Path, caplog) -> None:
    _digit_pngs(tmp_path / "data", 6)
    run = tv.train({**FAST, "dataset": f"folder:{tmp_path / 'data'}"}, out=tmp_path / "runs", quiet=True)
    cfg, pred = runs.read_config(run["run_dir"]), runs.read_predictions(run["run_dir"])
    assert mistakes.held_out_files(cfg, pred.classes, pred.labels.tolist()) is not None
    for f in sorted((tmp_path / "data" / "0").iterdir())[:3]:  # the hold-out now falls elsewhere
        f.unlink()
    assert mistakes.held_out_files(cfg, pred.classes, pred.labels.tolist()) is None
    assert "no longer match" in caplog.text


def test_other_datasets_write_no_mistakes_csv_but_list_mistakes_by_index(tmp_path: Path) -> None:
    run = tv.train({"dataset": "digits", "model": "mlp:16", "epochs": 1, "threads": 1}, out=tmp_path, quiet=True)
    assert not (Path(run["run_dir"]) / mistakes.MISTAKES).exists()
    rows = run.mistakes(as_frame=False)
    pred = runs.read_predictions(run["run_dir"])
    assert len(rows) == int((pred.predicted != pred.labels).sum())
    assert all(r["path"] == "" for r in rows)
    assert "path" not in run.mistakes().columns  # the DataFrame leaves the empty column out


def test_run_mistakes_in_a_notebook(folder_run: tv.RunResult) -> None:
    frame = folder_run.mistakes()
    assert list(frame.columns) == [c for c in mistakes.COLUMNS if c != "rank"] and frame.index.name == "rank"
    assert frame["confidence"].is_monotonic_decreasing
    assert len(folder_run.mistakes(n=3)) == 3
    html = tv.load(folder_run["run_dir"])._repr_html_()
    assert "Most confident mistakes" in html and Path(frame["path"].iloc[0]).name in html


def test_file_names_under_the_mistakes_grid(folder_run: tv.RunResult) -> None:
    fig = folder_run.plot_mistakes(n=6)
    rows = mistakes.read_mistakes(folder_run["run_dir"])[:6]
    cells = [ax for ax in fig.axes if ax.images]
    assert [ax.get_xlabel() for ax in cells] == [short_name(Path(r["path"]).name) for r in rows]
    pred = runs.read_predictions(folder_run["run_dir"])
    idx = [r["index"] for r in rows]
    assert mistakes.mistake_names(folder_run["run_dir"], idx) == [Path(r["path"]).name for r in rows]
    # the grid function itself: names are optional captions, missing ones left blank
    plain = plot_prediction_grid(pred.gallery(idx[:2]), pred.labels[idx[:2]], pred.predicted[idx[:2]], pred.classes)
    assert all(ax.get_xlabel() == "" for ax in plain.axes)
    named = plot_prediction_grid(pred.gallery(idx[:2]), pred.labels[idx[:2]], pred.predicted[idx[:2]], pred.classes,
                                 names=["a_very_long_file_name_indeed.png", ""])
    assert [ax.get_xlabel() for ax in named.axes] == ["a_very_long_f\u2026.png", ""]


def test_mistakes_on_a_new_folder_take_labels_from_its_class_folders(folder_run: tv.RunResult,
                                                                     tmp_path: Path) -> None:
    _digit_pngs(tmp_path / "new" / "batch1", 3, offset=40)
    (tmp_path / "new" / "loose.png").write_bytes((tmp_path / "new" / "batch1" / "1" / "1_040.png").read_bytes())
    rows = folder_run.mistakes(tmp_path / "new", as_frame=False)
    predicted = folder_run.predict(tmp_path / "new", top=3, as_frame=False)
    assert len(predicted) == 31  # every image, the loose one too
    labelled = [p for p in predicted if p["true"] is not None]
    assert len(labelled) == 30 and all(Path(p["path"]).parent.name == p["true"] for p in labelled)
    wrong = [p for p in labelled if p["class"] != p["true"]]
    assert sorted(r["path"] for r in rows) == sorted(str(Path(p["path"]).absolute()) for p in wrong)
    for r in rows:
        assert Path(r["path"]).parent.name == r["true"] != r["predicted"]
    loose = tmp_path / "loose"  # images outside any class folder: no label to compare with
    loose.mkdir()
    (loose / "x.png").write_bytes((tmp_path / "new" / "loose.png").read_bytes())
    with pytest.raises(tv.DataError, match="no image in a sub-folder named after"):
        folder_run.mistakes(loose, as_frame=False)


def test_predict_mistakes_on_the_command_line_and_in_the_report(folder_run: tv.RunResult, tmp_path: Path,
                                                                capsys) -> None:
    from tinyvision.cli import main
    from tinyvision.report import write_report

    _digit_pngs(tmp_path / "new", 3, offset=40)
    out = tmp_path / "wrong.csv"
    assert main(["predict", folder_run["run_dir"], str(tmp_path / "new"), "--mistakes", str(out)]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    expected = folder_run.mistakes(tmp_path / "new", as_frame=False)
    assert [r["path"] for r in rows] == [r["path"] for r in expected]
    assert f"{len(rows)} misclassified images" in capsys.readouterr().err
    assert main(["predict", folder_run["run_dir"], str(tmp_path / "new"), "--mistakes", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err  # never overwritten
    write_report(folder_run["run_dir"])  # the report's mistakes grid is captioned with the file names
    assert "under each, its file name (all of them in mistakes.csv)" in (Path(folder_run["run_dir"]) / "report.md").read_text()


@pytest.mark.parametrize("extra,message", [
    (["--mistakes", "{tmp}/no/such/folder/m.csv"], "does not exist"),
    (["--csv", "{tmp}/same.csv", "--mistakes", "{tmp}/same.csv"], "name the same file"),
])
def test_predict_output_paths_are_checked_before_any_work(folder_run: tv.RunResult, tmp_path: Path, capsys,
                                                          extra: list, message: str) -> None:
    from tinyvision.cli import main

    _digit_pngs(tmp_path / "new", 1)
    args = [a.format(tmp=tmp_path) for a in extra]
    assert main(["predict", folder_run["run_dir"], str(tmp_path / "new"), *args]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err  # one line, no prediction printed
    assert not (tmp_path / "same.csv").exists()


def test_predict_mistakes_without_a_folder_fails_before_classifying(folder_run: tv.RunResult, tmp_path: Path,
                                                                   capsys) -> None:
    from tinyvision.cli import main

    _digit_pngs(tmp_path / "new", 1)
    image = next((tmp_path / "new").rglob("*.png"))
    assert main(["predict", folder_run["run_dir"], str(image), "--mistakes", str(tmp_path / "m.csv")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "needs a folder of class sub-folders" in err


def test_a_run_without_a_directory_says_so_in_one_line() -> None:
    from tinyvision.errors import DataError

    run = tv.RunResult({"status": "completed", "run_dir": None})
    for call in (run.predictions, lambda: run.predict("x.png"), lambda: run.mistakes("folder")):
        with pytest.raises(DataError, match="wrote no directory"):
            call()
