"""Test metrics after training: per-class precision, recall and F1, macro-F1, top-k accuracy and
calibration (ECE, reliability bins) against scikit-learn's on fixed probabilities and on hand-made
cases with a known answer; what a run writes (result.json, the grid in predictions.safetensors),
what `evaluate` prints, and the experiment table's macro-F1 and ECE intervals."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import f1_score, precision_recall_fscore_support, top_k_accuracy_score

import tinyvision as tv
from tinyvision import runs
from tinyvision.cli import main
from tinyvision.errors import ConfigError, DataError
from tinyvision.evaluate import Predictions, calibration, class_report, metrics_record, top_k_accuracy
from tinyvision.experiments.results import point_row, table_text
from tinyvision.files import save_state
from tinyvision.stats import summarize

CLASSES = tuple("abcde")


def fixed_predictions(n: int = 300, k: int = 5, seed: int = 0) -> Predictions:
    """Seeded softmax probabilities of a fair but imperfect classifier; class 4 is never predicted
    (its probability is kept low) and class 3 never true, the cases where precision or recall is 0/0."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k - 2, (n,), generator=g)
    labels[::7] = k - 1  # class 4 is true sometimes, class 3 never
    logits = torch.randn(n, k, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, k)
    logits[:, k - 1] -= 8.0  # class 4 never wins
    return Predictions(logits.softmax(dim=1), labels, loss=0.0, seconds=0.0)


def made(confidence: list[float], right: list[bool], k: int = 10) -> Predictions:
    """Predictions whose predicted class (0) has exactly these probabilities; label 0 where right."""
    probs = torch.zeros(len(confidence), k, dtype=torch.float64)
    probs[:, 0] = torch.tensor(confidence, dtype=torch.float64)
    probs[:, 1:] = ((1 - probs[:, 0]) / (k - 1)).unsqueeze(1)
    labels = torch.tensor([0 if r else 1 for r in right])
    return Predictions(probs, labels, loss=0.0, seconds=0.0)


# -- against scikit-learn ----------------------------------------------------------------------------

def test_per_class_precision_recall_f1_and_macro_f1_are_scikit_learns() -> None:
    pred = fixed_predictions()
    y, y_hat = pred.labels.numpy(), pred.predicted.numpy()
    assert 4 not in set(y_hat) and 3 not in set(y)  # the 0/0 cases are there
    report = class_report(pred, CLASSES)
    p, r, f, s = precision_recall_fscore_support(y, y_hat, labels=range(5), zero_division=0)
    np.testing.assert_allclose(report.precision, p)
    np.testing.assert_allclose(report.recall, r)
    np.testing.assert_allclose(report.f1, f)
    assert report.support == s.tolist() == np.asarray(report.confusion).sum(axis=1).tolist()
    assert report.macro_f1 == pytest.approx(f1_score(y, y_hat, average="macro", zero_division=0))
    # macro-F1 averages over the classes found in the labels or the predictions: one in neither is left out
    assert report.macro_f1 == pytest.approx(np.mean([f[c] for c in sorted(set(y) | set(y_hat))]))
    three = Predictions(pred.probs[:, :3].softmax(dim=1), pred.labels.clamp(max=2), 0.0, 0.0)
    padded = Predictions(torch.cat([three.probs, torch.zeros(len(y), 2)], dim=1), three.labels, 0.0, 0.0)
    assert class_report(padded, CLASSES).macro_f1 == pytest.approx(class_report(three, CLASSES[:3]).macro_f1)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_top_k_accuracy_is_scikit_learns(k: int) -> None:
    pred = fixed_predictions()
    expected = top_k_accuracy_score(pred.labels.numpy(), pred.probs.numpy(), k=k, labels=range(5))
    assert top_k_accuracy(pred.probs, pred.labels, k) == (k, pytest.approx(expected))
    if k == 1:
        assert top_k_accuracy(pred.probs, pred.labels, 1)[1] == pytest.approx(pred.accuracy)


def test_top_k_above_the_class_count_is_clipped_and_below_1_refused() -> None:
    pred = fixed_predictions()
    assert top_k_accuracy(pred.probs, pred.labels, 5) == (5, 1.0)
    assert top_k_accuracy(pred.probs, pred.labels, 1000) == (5, 1.0)  # clipped to the 5 classes
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="top_k must be a whole number >= 1") as err:
            top_k_accuracy(pred.probs, pred.labels, bad)
        assert "\n" not in str(err.value)
    two = Predictions(torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.8, 0.2]]), torch.tensor([0, 0, 1]), 0.0, 0.0)
    assert top_k_accuracy(two.probs, two.labels, 1) == (1, pytest.approx(1 / 3))  # two classes: one column
    assert top_k_accuracy(two.probs, two.labels, 5) == (2, 1.0)


def test_reliability_bins_are_scikit_learns_calibration_curve_of_the_right_flags() -> None:
    pred = fixed_predictions(n=1000)
    cal = calibration(pred.probs, pred.labels, bins=10)
    confidence = pred.probs.max(dim=1).values.double().numpy()
    right = (pred.predicted == pred.labels).numpy()
    accuracy, mean_confidence = calibration_curve(right, confidence, n_bins=10, strategy="uniform")
    full = [b for b in range(10) if cal.count[b]]
    np.testing.assert_allclose([cal.accuracy[b] for b in full], accuracy)
    np.testing.assert_allclose([cal.confidence[b] for b in full], mean_confidence)
    assert all(cal.accuracy[b] is None and cal.confidence[b] is None for b in range(10) if b not in full)
    assert sum(cal.count) == 1000 and cal.bins == 10
    counts = np.array([cal.count[b] for b in full])
    assert cal.ece == pytest.approx(float((counts * np.abs(accuracy - mean_confidence)).sum() / 1000))


# -- hand-made cases with a known answer ---------------------------------------------------------------

def test_ece_of_hand_made_cases() -> None:
    # every prediction at confidence 0.9 and 9 of 10 right: calibrated
    calibrated = made([0.9] * 10, [True] * 9 + [False])
    cal = calibration(calibrated.probs, calibrated.labels, bins=15)
    assert cal.ece == pytest.approx(0.0, abs=1e-12)
    (b,) = [i for i, n in enumerate(cal.count) if n]
    assert (b, cal.count[b], cal.confidence[b], cal.accuracy[b]) == (13, 10, pytest.approx(0.9), pytest.approx(0.9))
    # the same confidence but half right: 0.4 too sure
    over = made([0.9] * 10, [True] * 5 + [False] * 5)
    assert calibration(over.probs, over.labels, bins=15).ece == pytest.approx(0.4)
    # two bins, each 0.05 off in another direction: 0.05 on average, not 0
    two = made([0.95] * 4 + [0.55] * 4, [True] * 4 + [True, True, True, False])
    cal = calibration(two.probs, two.labels, bins=10)
    assert cal.ece == pytest.approx(0.5 * 0.05 + 0.5 * 0.2)  # |1 - 0.95| and |0.75 - 0.55|
    assert [cal.count[5], cal.count[9]] == [4, 4] and cal.accuracy[5] == pytest.approx(0.75)
    for bad in (0, -3, 1.5):
        with pytest.raises(ConfigError, match="calibration_bins"):
            calibration(two.probs, two.labels, bad)


def test_metrics_record_is_result_json_ready() -> None:
    record = metrics_record(fixed_predictions(), CLASSES, top_k=9, bins=12)
    assert record["top_k"] == 5 and record["top_k_accuracy"] == 1.0  # clipped to the class count
    assert record["calibration"]["bins"] == 12 and len(record["calibration"]["count"]) == 12
    assert set(record["per_class"]) == {"precision", "recall", "f1", "support"}
    json.dumps(record, allow_nan=False)  # valid JSON: empty bins are null, not NaN


# -- what a run writes, and `evaluate` --------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("metrics") / "run"
    tv.train({"dataset": "digits", "model": "digits-mlp", "epochs": 2, "threads": 1, "top_k": 3,
              "calibration_bins": 10}, run_dir=out, quiet=True)
    return out


def test_result_json_holds_the_metrics_of_the_stored_probabilities(digits_run: Path) -> None:
    test, pred = runs.read_result(digits_run)["test"], runs.read_predictions(digits_run)
    y, y_hat = pred.labels.numpy(), pred.predicted.numpy()
    assert test["macro_f1"] == pytest.approx(f1_score(y, y_hat, average="macro"))
    np.testing.assert_allclose(test["per_class"]["f1"], f1_score(y, y_hat, average=None, labels=range(10)))
    assert test["top_k"] == 3 and test["top_k_accuracy"] == pytest.approx(
        top_k_accuracy_score(y, pred.probs.numpy(), k=3, labels=range(10)))
    cal = calibration(pred.probs, pred.labels, 10)
    assert test["calibration"] == cal.record() and test["ece"] == pytest.approx(cal.ece)
    assert 0 < test["ece"] < 1


def test_the_run_keeps_a_labelled_grid_of_training_images(digits_run: Path) -> None:
    from tinyvision.data import load_data

    data = load_data(runs.read_config(digits_run))
    pred = runs.read_predictions(digits_run)
    rows = runs.grid_rows(data.train.labels, 10)
    assert len(rows) == runs.GRID_IMAGES and pred.grid_classes == data.classes
    assert torch.equal(pred.grid_images, data.train.images[rows])  # as stored: dtype and values
    assert pred.grid_images.dtype == data.train.images.dtype and torch.equal(pred.grid_labels, data.train.labels[rows])


def test_predictions_written_before_the_grid_read_back_without_one(digits_run: Path, tmp_path: Path) -> None:
    pred = runs.read_predictions(digits_run)
    save_state(tmp_path / runs.PREDICTIONS, {"probs": pred.probs, "labels": pred.labels, "index": pred.index,
                                             "images": pred.images, "classes": list(pred.classes)})
    old = runs.read_predictions(tmp_path)
    assert (old.grid_images, old.grid_labels, old.grid_classes) == (None, None, None)
    assert torch.equal(old.probs, pred.probs)
    save_state(tmp_path / runs.PREDICTIONS, [1, 2])
    with pytest.raises(DataError, match="not a tinyvision predictions file"):
        runs.read_predictions(tmp_path)


def test_evaluate_prints_the_per_class_table_and_the_ece(digits_run: Path, capsys: pytest.CaptureFixture) -> None:
    from tinyvision.inference import evaluate_run

    assert main(["evaluate", str(digits_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    found = evaluate_run(digits_run)
    summary = re.fullmatch(r"top-3 accuracy (\d+\.\d\d)%  macro-F1 (\d+\.\d\d)%  ECE (\d+\.\d\d)% \(10 bins\)",
                           lines[1])
    assert summary, lines[1]
    assert [float(v) for v in summary.groups()] == pytest.approx(
        [100 * found["top_k_accuracy"], 100 * found["macro_f1"], 100 * found["ece"]], abs=0.006)
    assert lines[2].split() == ["class", "precision", "recall", "F1", "support"]
    table = [line.split() for line in lines[4:14]]
    per_class = found["per_class"]
    for i, cells in enumerate(table):
        assert cells == [str(i), f"{100 * per_class['precision'][i]:.2f}%", f"{100 * per_class['recall'][i]:.2f}%",
                         f"{100 * per_class['f1'][i]:.2f}%", str(per_class["support"][i])]
    assert all(" taken for " in line for line in lines[14:])  # then the most confused pairs


def test_each_member_of_a_population_writes_its_own_metrics(tmp_path: Path) -> None:
    exp = tv.compare(["digits-mlp"], dataset="digits", epochs=1, threads=1, repeats=2, population=2,
                     out=tmp_path, quiet=True)
    run_dirs = [r.dir for r in exp.runs]
    results = [runs.read_result(d) for d in run_dirs]
    assert [r["population"]["member"] for r in results] == [0, 1]
    for run_dir, result in zip(run_dirs, results):
        pred = runs.read_predictions(run_dir)
        assert result["test"]["macro_f1"] == pytest.approx(
            f1_score(pred.labels.numpy(), pred.predicted.numpy(), average="macro"))
        assert result["test"]["ece"] == pytest.approx(calibration(pred.probs, pred.labels, 15).ece)
        assert pred.grid_images is not None and len(pred.grid_labels) == runs.GRID_IMAGES
    assert results[0]["test"]["ece"] != results[1]["test"]["ece"]  # two seeds, two models


# -- comparisons ------------------------------------------------------------------------------------

def test_experiment_rows_give_macro_f1_and_ece_bounded_intervals() -> None:
    point = {"id": "p00", "label": "model=a", "values": {"model": "a"}}
    done = [{"status": "completed", "params": 10, "macs": 20, "total_seconds": 1.0, "best_epoch": 1,
             "test": {"accuracy": a, "loss": 0.3, "macro_f1": f, "ece": e}}
            for a, f, e in ((0.90, 0.89, 0.004), (0.92, 0.91, 0.030), (0.91, 0.90, 0.001))]
    row = point_row(point, done)
    for name, values in (("test_macro_f1", [0.89, 0.91, 0.90]), ("test_ece", [0.004, 0.030, 0.001])):
        bounded = summarize(values, kind="proportion")
        assert (row[f"{name}_mean"], row[f"{name}_ci_low"], row[f"{name}_ci_high"]) == \
            (pytest.approx(bounded.mean), bounded.ci_low, bounded.ci_high)
    assert 0 < row["test_ece_ci_low"] < row["test_ece_mean"]  # a plain t interval would go below 0 here
    assert summarize([0.004, 0.030, 0.001]).ci_low < 0
    wide = table_text([row, {**row, "model": "b", "label": "model=b", "point": "p01"}], wide=True)
    header = re.split(r"\s{2,}", wide.splitlines()[0])
    assert header[:2] == ["model", "test acc 95% CI"]  # the essential columns stay first
    assert {"macro-F1 95% CI", "ECE 95% CI"} <= set(header)
    narrow = table_text([row], width=60)
    assert "macro-F1" not in narrow.splitlines()[0] and re.search(r"macro-F1\s+95%\s+CI", narrow)  # named as not shown
