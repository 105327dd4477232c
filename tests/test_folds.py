"""k-fold cross-validation: cv_folds/cv_fold in the data layer (the folds partition train +
validation exactly, stratified, the test split untouched) and `train --folds K` (K runs in one
experiment directory, a summary with mean ± std and a 95% CI over the folds)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinyvision.cli import main
from tinyvision.config import make_config
from tinyvision.data import load_data
from tinyvision.data.cached import run_normalization
from tinyvision.data.loader import Normalization
from tinyvision.data.splits import fold_of
from tinyvision.errors import ConfigError

TRAIN, TEST = 103, 29  # images in the npz; 103 = 5 * 20 + 3: folds of unequal size


@pytest.fixture
def numbered(tmp_path: Path) -> str:
    """npz:PATH whose every image carries its own number in pixel (0, 0): train 0..102, test 1000..1028;
    three classes of unequal size."""
    def images(ids: np.ndarray) -> np.ndarray:
        x = np.zeros((len(ids), 4, 4), dtype=np.float32)
        x[:, 0, 0] = ids
        return x

    train_ids, test_ids = np.arange(TRAIN), 1000 + np.arange(TEST)
    labels = np.array([0] * 50 + [1] * 40 + [2] * 13)
    path = tmp_path / "numbered.npz"
    np.savez(path, x_train=images(train_ids), y_train=labels, x_test=images(test_ids), y_test=np.arange(TEST) % 3)
    return f"npz:{path}"


def ids(split) -> list[int]:
    return [int(v) for v in split.images[:, 0, 0, 0]]


@pytest.mark.parametrize("k", [2, 5, 10])
def test_the_folds_partition_train_and_validation_exactly(numbered: str, k: int) -> None:
    seen, labels = [], {}
    for fold in range(k):
        data = load_data(make_config(dataset=numbered, cv_folds=k, cv_fold=fold))
        val, train = ids(data.val), ids(data.train)
        assert not set(val) & set(train) and sorted(val + train) == list(range(TRAIN))  # the pool, split in two
        assert ids(data.test) == list(range(1000, 1000 + TEST))  # untouched
        labels[fold] = np.bincount(data.val.labels.numpy(), minlength=3)
        seen += val
    assert sorted(seen) == list(range(TRAIN))  # every image in exactly one validation fold
    sizes = [int(c.sum()) for c in labels.values()]
    assert max(sizes) - min(sizes) <= 1
    per_class = np.stack(list(labels.values()))
    assert (per_class.max(axis=0) - per_class.min(axis=0) <= 1).all()  # stratified: each class within one


def test_folds_follow_split_seed_and_nothing_else(numbered: str) -> None:
    def val(**fields) -> list[int]:
        return ids(load_data(make_config(dataset=numbered, cv_folds=5, cv_fold=2, **fields)).val)

    assert val() == val(seed=7)  # the run seed varies training only
    assert val() != val(split_seed=1)
    labels = np.repeat(np.arange(4), 25)
    assert (fold_of(labels, 5, 3) == fold_of(labels, 5, 3)).all()


def test_digits_folds_and_their_own_normalization() -> None:
    pooled = 1350  # Digits' train + validation
    folds = [load_data(make_config(dataset="digits", cv_folds=3, cv_fold=i, threads=1)) for i in range(3)]
    assert sum(len(d.val) for d in folds) == pooled and all(len(d.train) + len(d.val) == pooled for d in folds)
    assert all(len(d.test) == 447 for d in folds)
    for i, data in enumerate(folds):  # statistics of the fold's own training images (cached per fold)
        norm = run_normalization(make_config(dataset="digits", cv_folds=3, cv_fold=i, threads=1))
        assert norm == Normalization.from_split(data.train)
    assert run_normalization(make_config(dataset="digits", cv_folds=3, cv_fold=0, threads=1)) != \
        run_normalization(make_config(dataset="digits", cv_folds=3, cv_fold=1, threads=1))


def test_bad_fold_settings_are_one_line(numbered: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="val_size does not apply with cv_folds"):
        load_data(make_config(dataset=numbered, cv_folds=5, cv_fold=0, val_size=10))
    with pytest.raises(ConfigError, match="cv_fold 5 is beyond cv_folds 5"):
        make_config(cv_folds=5, cv_fold=5)
    few = tmp_path / "few.npz"
    np.savez(few, x_train=np.zeros((3, 4, 4), np.uint8), y_train=[0, 1, 0], x_test=np.zeros((2, 4, 4), np.uint8),
             y_test=[0, 1])
    with pytest.raises(ConfigError, match="hold 3 images, fewer than the folds"):
        load_data(make_config(dataset=f"npz:{few}", cv_folds=5, cv_fold=0))


def test_train_folds_5_writes_five_runs_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "--dataset", "digits", "--model", "digits-mlp", "--epochs", "2", "--folds", "5",
                 "--run-dir", str(tmp_path / "cv"), "--quiet", "--no-report", "threads=1"])
    out = capsys.readouterr().out
    assert code == 0
    exp = tmp_path / "cv"
    results = sorted(exp.glob("runs/*/seed0/result.json"))
    assert len(results) == 5
    assert all(json.loads(r.read_text())["status"] == "completed" for r in results)
    folds = sorted(int(r.parent.joinpath("config.yaml").read_text().split("cv_fold: ")[1].split()[0]) for r in results)
    assert folds == [0, 1, 2, 3, 4]
    summary = json.loads((exp / "cv.json").read_text())
    assert summary["folds"] == 5
    for metric in ("val_accuracy", "test_accuracy"):
        s = summary[metric]
        assert s["n"] == 5 and 0 <= s["ci_low"] <= s["mean"] <= s["ci_high"] <= 1 and s["std"] > 0
    assert "validation accuracy:" in out and "test accuracy:" in out and "over 5 folds; 95% CI" in out
    assert "mean ± std over 5 folds" in (exp / "results.md").read_text()
    assert len((exp / "results.csv").read_text().splitlines()) == 6  # a header and a row per fold


def test_train_folds_refuses_what_does_not_apply(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--folds", "1", "--out", str(tmp_path)]) == 2
    assert "folds must be a whole number from 2 to 100" in capsys.readouterr().err
    assert main(["train", "--folds", "3", "--out", str(tmp_path), "val_size=100"]) == 2
    assert "val_size does not apply with folds" in capsys.readouterr().err
    assert main(["train", "--folds", "3", "--resume", str(tmp_path)]) == 2
    assert "--folds does not go with --resume" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cross_validate_from_python_with_a_model_class(tmp_path: Path) -> None:
    from torch import nn

    from tinyvision.experiments.runner import cross_validate

    class Tiny(nn.Module):  # defined here: given in Python, trained in this process
        def __init__(self, in_channels: int, num_classes: int) -> None:
            super().__init__()
            self.fc = nn.Linear(in_channels * 64, num_classes)

        def forward(self, x):
            return self.fc(x.flatten(1))

    exp_dir, rows, table = cross_validate({"dataset": "digits", "model": Tiny, "epochs": 1, "threads": 1}, 3,
                                          exp_dir=tmp_path / "cv", quiet=True)
    assert [row["completed"] for row in rows] == [1, 1, 1] and "over 3 folds" in table
    assert json.loads((exp_dir / "cv.json").read_text())["test_accuracy"]["n"] == 3
