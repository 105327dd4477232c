"""Experiments answer with their uncertainty: n, mean, std and 95% CI per point, and each point
against a reference with a CI of the difference, Welch's p-value and a sentence, in every output."""
from __future__ import annotations

import csv
import re

import pytest

from tinyvision.experiments import build_experiment, run_experiment
from tinyvision.report import write_report

TINY = dict(dataset="digits", model="digits-mlp", epochs=2, batch_size=64, threads=1, train_subset=300)


def read_csv(path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_identical_configurations_give_no_significant_difference(tmp_path) -> None:
    # eval_batch_size changes nothing about training: the two points are the same experiment twice
    exp = build_experiment({"name": "same", "base": TINY, "zip": {"eval_batch_size": [1024, 512]}, "repeats": 3})
    exp_dir, rows, text = run_experiment(exp, tmp_path / "same", quiet=True)
    assert [r["completed"] for r in rows] == [3, 3]
    sentence = next(line for line in text.splitlines() if "test accuracy" in line and line.startswith("- "))
    assert sentence.startswith("- no significant difference in test accuracy between 512 and 1024 at 3 seeds each")
    table = read_csv(exp_dir / "results.csv")
    assert table[0]["verdict_test_accuracy"] == "reference" and float(table[1]["diff_test_accuracy"]) == 0.0
    assert float(table[1]["p_test_accuracy"]) == 1.0


@pytest.mark.slow
def test_a_large_gap_is_found_in_the_right_direction_in_every_output(tmp_path) -> None:
    exp = build_experiment({"name": "gap", "base": TINY, "zip": {"lr": [1e-5, 1e-2]}, "repeats": 3})
    exp_dir, rows, text = run_experiment(exp, tmp_path / "gap", quiet=True)
    low, high = rows
    assert high["test_accuracy_mean"] - low["test_accuracy_mean"] > 0.3  # lr 1e-5 barely moves in 2 epochs
    for row in rows:  # n, mean, std and the 95% CI of every metric
        assert row["test_accuracy_n"] == 3 and row["test_accuracy_ci_low"] < row["test_accuracy_mean"] \
            < row["test_accuracy_ci_high"]
    pattern = r"0\.01 beats 1e-05 by \d+\.\d points of test accuracy \(95% CI \d+\.\d to \d+\.\d, p (<|=) 0\.0\d+"
    assert re.search(pattern, text), text
    assert re.search(r"0\.01 has [\d.]+ lower test loss than 1e-05", text)
    table = read_csv(exp_dir / "results.csv")
    assert float(table[1]["p_test_accuracy"]) < 0.05 and float(table[1]["diff_test_accuracy"]) > 0.3
    assert float(table[1]["diff_test_accuracy_ci_low"]) > 0  # the CI excludes no difference
    assert re.search(pattern, (exp_dir / "results.md").read_text())
    html_path, _ = write_report(exp_dir)
    html = html_path.read_text()
    assert "95% CI" in html and re.search(pattern, html) and "Differences from 1e-05" in html


@pytest.mark.slow
def test_baseline_names_the_reference_and_an_unknown_one_is_refused(tmp_path) -> None:
    exp = build_experiment({"name": "gap", "base": TINY, "zip": {"lr": [1e-5, 1e-2]}, "repeats": 3})
    _, _, text = run_experiment(exp, tmp_path / "gap", quiet=True, baseline="0.01")
    assert "Differences from 0.01" in text and "0.01 beats 1e-05" in text  # the better one named first
    from tinyvision.errors import ConfigError

    with pytest.raises(ConfigError, match="--baseline 'lr=3' is not a point of this experiment"):
        run_experiment(exp, tmp_path / "gap", quiet=True, baseline="lr=3")
