"""Experiments answer with their uncertainty: n, mean, std and 95% CI per point, and each point
against a reference with a CI of the difference, Welch's p-value and a sentence, in every output.
A verdict needs 5 seeds a side: with fewer it is "inconclusive", whatever p."""
from __future__ import annotations

import csv
import re
from html import unescape

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
    exp = build_experiment({"name": "same", "base": TINY, "zip": {"eval_batch_size": [1024, 512]}, "repeats": 5})
    exp_dir, rows, text = run_experiment(exp, tmp_path / "same", quiet=True)
    assert [r["completed"] for r in rows] == [5, 5]
    sentence = next(line for line in text.splitlines() if "test accuracy" in line and line.startswith("- "))
    assert sentence.startswith("- no significant difference in test accuracy between 512 and 1024 at 5 seeds each")
    table = read_csv(exp_dir / "results.csv")
    assert table[0]["verdict_test_accuracy"] == "reference" and float(table[1]["diff_test_accuracy"]) == 0.0
    assert float(table[1]["p_test_accuracy"]) == 1.0


@pytest.mark.slow
def test_a_large_gap_is_found_in_the_right_direction_in_every_output(tmp_path) -> None:
    exp = build_experiment({"name": "gap", "base": TINY, "zip": {"lr": [1e-5, 1e-2]}, "repeats": 5})
    exp_dir, rows, text = run_experiment(exp, tmp_path / "gap", quiet=True)
    low, high = rows
    assert high["test_accuracy_mean"] - low["test_accuracy_mean"] > 0.3  # lr 1e-5 barely moves in 2 epochs
    for row in rows:  # n, mean, std and the 95% CI of every metric, accuracies' inside [0, 1]
        assert row["test_accuracy_n"] == 5 and 0 <= row["test_accuracy_ci_low"] < row["test_accuracy_mean"] \
            < row["test_accuracy_ci_high"] <= 1
    pattern = r"0\.01 beats 1e-05 by \d+\.\d points of test accuracy \(95% CI \d+\.\d to \d+\.\d, p (<|=) 0\.0\d+"
    assert re.search(pattern, text), text
    assert re.search(r"0\.01 has [\d.]+ lower test loss than 1e-05", text)
    table = read_csv(exp_dir / "results.csv")
    assert float(table[1]["p_test_accuracy"]) < 0.05 and float(table[1]["diff_test_accuracy"]) > 0.3
    assert float(table[1]["diff_test_accuracy_ci_low"]) > 0  # the CI excludes no difference
    assert re.search(pattern, (exp_dir / "results.md").read_text())
    html_path, _ = write_report(exp_dir)
    html = unescape(html_path.read_text())  # "p < 0.001" is "p &lt; 0.001" in the file
    assert "95% CI" in html and re.search(pattern, html) and "Differences from 1e-05" in html


@pytest.mark.slow
def test_the_same_gap_at_three_seeds_is_inconclusive(tmp_path) -> None:
    exp = build_experiment({"name": "gap3", "base": TINY, "zip": {"lr": [1e-5, 1e-2]}, "repeats": 3})
    exp_dir, rows, text = run_experiment(exp, tmp_path / "gap3", quiet=True)
    assert rows[1]["test_accuracy_mean"] - rows[0]["test_accuracy_mean"] > 0.3  # a gap no one would doubt
    assert "- inconclusive: 0.01 vs 1e-05 on test accuracy at 3 seeds each, fewer than 5 per side" in text
    assert "beats" not in text and read_csv(exp_dir / "results.csv")[1]["outcome_test_accuracy"] == "inconclusive"


@pytest.mark.slow
def test_baseline_names_the_reference_and_an_unknown_one_is_refused(tmp_path) -> None:
    exp = build_experiment({"name": "gap", "base": TINY, "zip": {"lr": [1e-5, 1e-2]}, "repeats": 5})
    _, _, text = run_experiment(exp, tmp_path / "gap", quiet=True, baseline="0.01")
    assert "Differences from 0.01" in text and "0.01 beats 1e-05" in text  # the better one named first
    from tinyvision.errors import ConfigError

    with pytest.raises(ConfigError, match="--baseline 'lr=3' is not a point of this experiment"):
        run_experiment(exp, tmp_path / "gap", quiet=True, baseline="lr=3")
