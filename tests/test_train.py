"""Training end to end: accuracy on real data, early stopping, schedules, the run directory."""
from __future__ import annotations

import json
import math

import pytest
import torch

import tinyvision as tv
from tinyvision import runs
from tinyvision.files import load_weights
from tinyvision.inference import evaluate_run

pytestmark = pytest.mark.slow  # the quick loop (-m 'not slow') leaves it out: trains real models, MNIST

DIGITS_CNN = dict(dataset="digits", model="digits-cnn", epochs=40, batch_norm=True, augment="translate",
                  translate=1, schedule="onecycle", lr=3e-3, label_smoothing=0.1)


def test_digits_cnn_reaches_95_percent(tmp_path) -> None:
    # precision pinned: "auto" trains conv nets in bf16 on CPUs with native bf16 (Zen 4) and fp32
    # elsewhere (AVX2). Even in fp32 the 40-epoch trajectory moves with the CPU's rounding: measured
    # 0.9687 here (seeds 1, 2: 0.9709, 0.9776), only 8 images above 0.95; 0.93 keeps ~17 images.
    result = tv.train({**DIGITS_CNN, "precision": "fp32"}, out=tmp_path, quiet=True)
    assert result["status"] == "completed"
    assert result["test"]["accuracy"] >= 0.93
    assert sum(result["test"]["per_class"]["support"]) == 447


def test_mnist_lenet_one_epoch_reaches_97_percent(tmp_path, shared_data) -> None:
    cfg = dict(dataset="mnist", data_dir=str(shared_data), model="lenet", optimizer="sgd", momentum=0.9, lr=0.01,
               batch_size=64, epochs=1)
    result = tv.train(cfg, out=tmp_path, quiet=True)
    assert result["params"] == 431_080
    # measured 0.9805 in fp32 (AVX2); precision=auto trains this conv net in bf16 on CPUs with native
    # bf16 (Zen 4), which moves the result: 0.965 leaves ~1.5 points of margin on either CPU
    assert result["test"]["accuracy"] >= 0.965
    assert sum(result["test"]["per_class"]["support"]) == 10_000


def test_run_directory_holds_the_whole_record(tmp_path) -> None:
    run_dir = tmp_path / "run"
    result = tv.train(dict(dataset="digits", model="digits-mlp", epochs=3), run_dir=run_dir, quiet=True)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [runs.CONFIG, runs.METRICS, runs.RESULT, runs.WEIGHTS, runs.PREDICTIONS, runs.CHECKPOINT])
    rows = runs.read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("train_loss", "train_accuracy", "train_error", "val_loss", "val_accuracy",
                "val_error", "lr", "seconds"):
        assert all(math.isfinite(r[key]) for r in rows), key
    saved = json.loads((run_dir / runs.RESULT).read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["params"] == 23_146 and saved["seed"] == 0
    assert {"torch", "numpy", "python", "tinyvision", "code_hash"} <= set(saved["versions"])
    cm = torch.tensor(saved["test"]["confusion"])
    assert cm.shape == (10, 10) and cm.sum() == 447
    assert saved["test"]["accuracy"] == pytest.approx(float(cm.diag().sum() / cm.sum()))
    _, meta = load_weights(run_dir / runs.WEIGHTS)
    assert meta["input_shape"] == [1, 8, 8] and meta["classes"] == [str(i) for i in range(10)]
    assert len(meta["mean"]) == 1 and meta["std"][0] > 0
    assert runs.read_config(run_dir) == tv.make_config(dataset="digits", model="digits-mlp", epochs=3)


def test_best_weights_are_restored_and_evaluated(tmp_path) -> None:
    # a large learning rate makes validation loss wander, so the last epoch is rarely the best; which
    # epoch is best moves with the CPU's rounding, so try up to 3 seeds for a run whose best epoch is
    # not the last (the test is only meaningful then), and check the restored weights on that run
    for seed in (1, 2, 3):
        cfg = dict(dataset="digits", model="digits-mlp", epochs=12, lr=0.02, seed=seed)
        run_dir = tmp_path / f"seed{seed}"
        result = tv.train(cfg, run_dir=run_dir, quiet=True)
        rows = runs.read_metrics(run_dir)
        best = min(rows, key=lambda r: r["val_loss"])
        assert result["best_epoch"] == best["epoch"]
        if best["epoch"] < 12:
            break
    assert best["epoch"] < 12  # the test is meaningful: the best epoch is not the last
    val = evaluate_run(run_dir, "val")
    assert val["loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    test = evaluate_run(run_dir, "test")
    assert test["accuracy"] == pytest.approx(result["test"]["accuracy"])


def test_early_stopping_stops_after_patience(tmp_path) -> None:
    cfg = dict(dataset="digits", model="digits-mlp", epochs=200, lr=0.02, seed=1, patience=3)
    result = tv.train(cfg, run_dir=tmp_path / "r", quiet=True)
    rows = runs.read_metrics(tmp_path / "r")
    assert result["stopped_early"] and len(rows) < 200
    assert len(rows) == result["best_epoch"] + 3
    assert all(r["val_loss"] >= rows[result["best_epoch"] - 1]["val_loss"] for r in rows)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path) -> None:
    cfg = dict(dataset="digits", model="digits-cnn", epochs=2, augment="translate", dropout=0.2)
    weights = []
    for i, seed in enumerate([4, 4, 5]):
        tv.train({**cfg, "seed": seed}, run_dir=tmp_path / str(i), quiet=True)
        weights.append(load_weights(tmp_path / str(i) / runs.WEIGHTS)[0])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "adamax", "adadelta"])
def test_every_optimizer_learns(tmp_path, optimizer: str) -> None:
    lr = {"sgd": 0.3, "adadelta": 1.0}.get(optimizer, 3e-3)  # sgd: plain (momentum 0)
    cfg = dict(dataset="digits", model="digits-mlp", epochs=4, optimizer=optimizer, lr=lr, batch_size=16)
    result = tv.train(cfg, out=tmp_path, quiet=True)
    assert result["test"]["accuracy"] > 0.7, optimizer


@pytest.mark.parametrize("schedule,expected", [
    ("none", [0.01, 0.01, 0.01, 0.01]),
    ("exponential", [0.01, 0.005, 0.0025, 0.00125]),
    ("step", [0.01, 0.01, 0.005, 0.005]),
])
def test_per_epoch_schedules(tmp_path, schedule: str, expected: list[float]) -> None:
    cfg = dict(dataset="digits", model="digits-mlp", epochs=4, lr=0.01, schedule=schedule, gamma=0.5,
               step_size=2)
    tv.train(cfg, run_dir=tmp_path / "r", quiet=True)
    assert [r["lr"] for r in runs.read_metrics(tmp_path / "r")] == pytest.approx(expected)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_per_step_schedules_change_within_training(tmp_path, schedule: str) -> None:
    tv.train(dict(dataset="digits", model="digits-mlp", epochs=3, schedule=schedule),
             run_dir=tmp_path / "r", quiet=True)
    lrs = [r["lr"] for r in runs.read_metrics(tmp_path / "r")]
    assert len(set(lrs)) == 3


@pytest.mark.parametrize("init", ["xavier", "kaiming", "normal"])
def test_init_schemes_change_the_starting_weights(init: str) -> None:
    from tinyvision.optim import init_weights

    model = tv.create_model("cnn-tiny", (1, 28, 28), 10)
    before = model.conv1.weight.clone()
    init_weights(model, init)
    assert not torch.equal(before, model.conv1.weight)
    assert torch.all(model.conv1.bias == 0)
    if init == "normal":
        assert model.head.weight.std().item() == pytest.approx(0.01, rel=0.2)
