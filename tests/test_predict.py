"""`tinyvision predict` over folders: batched, threaded decoding; one line per image where the
output is piped or in the CSV, a progress bar and a summary on a terminal."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinyvision as tv
from tinyvision import inference
from tinyvision.cli import main


@pytest.fixture(scope="module")
def run_and_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("predict")
    run = tv.train({"dataset": "digits", "model": "digits-mlp", "epochs": 3, "threads": 1},
                   run_dir=root / "run", quiet=True)
    digits = load_digits()
    for i in range(25):
        folder = root / "images" / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 15.9).astype("uint8")).save(folder / f"{i}.png")
    (root / "images" / "3" / "broken.png").write_bytes(b"not a png")
    return Path(run["run_dir"]), root / "images"


def test_batches_give_the_rows_one_batch_gives(run_and_folder, monkeypatch) -> None:
    run, images = run_and_folder
    loaded = inference.load_model(run)
    whole, failed = inference.classify_files(loaded, [images], top=3)
    seen: list[int] = []
    monkeypatch.setattr(inference, "PREDICT_BATCH", 4)
    batched, failed_too = inference.classify_files(loaded, [images], top=3, progress=seen.append)
    assert [r["path"] for r in batched] == [r["path"] for r in whole] and len(whole) == 25
    for a, b in zip(batched, whole):
        assert a["class"] == b["class"] and a["probability"] == pytest.approx(b["probability"], abs=1e-6)
    assert failed == failed_too and len(failed) == 1 and "broken.png" in failed[0][0]
    assert sum(seen) == 26 and max(seen) == 4  # every file (the unreadable one too), a batch at a time


def test_piped_output_has_a_line_per_image(run_and_folder, capsys) -> None:
    run, images = run_and_folder
    assert main(["predict", str(run), str(images)]) == 1  # one unreadable file
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 25 and all("\t" in line for line in out.splitlines())
    assert err.count("broken.png") == 1


def test_a_terminal_gets_the_first_lines_and_a_summary(run_and_folder, capsys, monkeypatch, tmp_path) -> None:
    run, images = run_and_folder
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["predict", str(run), str(images), "--csv", str(tmp_path / "p.csv")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 11 and lines[-1].startswith("... 15 more (all of them in ")
    assert "25 images by predicted class:" in lines[-1]
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 26  # the CSV has every image


def test_decoding_matches_the_single_image_reader(run_and_folder) -> None:
    run, images = run_and_folder
    loaded = inference.load_model(run)
    path = next(images.rglob("0.png"))
    one = inference.read_image(path, loaded.meta["input_shape"], loaded.meta["pixel_max"])
    batch = inference._decode(path, loaded.meta["input_shape"])
    assert np.array_equal(batch.astype(np.float32) * (loaded.meta["pixel_max"] / 255.0), one.numpy())
