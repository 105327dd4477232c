"""What a newcomer ran into: accuracy intervals outside 0-100%, verdicts from two seeds, tables wider
than the terminal, empty validation columns with val_size=0, an override of a varied field that
changed nothing. Experiments here are written by hand (manifest + result.json, the files a run
writes), so nothing trains; one slow test runs the real command in a pipe."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinyvision import runs
from tinyvision.errors import ConfigError
from tinyvision.experiments import load_experiment
from tinyvision.experiments.results import collect, table_text, write_tables
from tinyvision.report import read_experiment
from tinyvision.report.tables import points_table, run_summary_table, runs_table

REPO = Path(__file__).resolve().parents[1]
VALIDATION = "validation split (350 images)"


def fake_experiment(root: Path, accuracies: dict[str, list[float]], validation: str = VALIDATION) -> Path:
    """An experiment directory as the runner leaves it: one point per model (the varied field),
    one completed run per accuracy; params and seconds made up, losses from the accuracy."""
    points = []
    for i, (model, accs) in enumerate(accuracies.items()):
        entries = []
        for seed, acc in enumerate(accs):
            rel = f"runs/p{i:02d}/seed{seed}"
            (root / rel).mkdir(parents=True)
            result = {"status": "completed", "params": 23_146 * (i + 1), "macs": 22_848 * (i + 1), "seed": seed,
                      "test": {"accuracy": acc, "loss": 1.5 - acc}, "best_val": {"accuracy": acc, "loss": 1.4 - acc},
                      "best_epoch": 10 + seed, "total_seconds": 12.5 + seed, "validation": validation}
            (root / rel / runs.RESULT).write_text(json.dumps(result))
            entries.append({"seed": seed, "dir": rel})
        points.append({"id": f"p{i:02d}", "label": f"model={model}", "values": {"model": model}, "runs": entries})
    (root / "manifest.json").write_text(json.dumps({"name": root.name, "kind": "compare", "axes": ["model"],
                                                    "points": points}))
    return root


def table_lines(text: str) -> list[str]:
    """The table itself: the lines before the first blank line."""
    return text.split("\n\n")[0].splitlines()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


FIVE = {"digits-mlp": [0.90, 0.91, 0.89, 0.905, 0.895], "digits-cnn": [0.92, 0.93, 0.915, 0.925, 0.91],
        "cnn:16-32/k3/fc128": [0.95, 0.94, 0.945, 0.955, 0.96]}


# -- 1. accuracy intervals stay in [0, 100%]; fewer than 5 seeds: inconclusive --------------------

def test_two_seeds_at_99_and_96_percent_give_an_interval_inside_0_100(tmp_path: Path) -> None:
    exp = fake_experiment(tmp_path / "two", {"digits-mlp": [0.99, 0.96], "digits-cnn": [0.60, 0.99]})
    rows = collect(exp)
    text = write_tables(exp, rows, wide=True)
    for row in rows:  # the plain t interval of 99% and 96% would reach 116.6%
        assert 0.0 <= row["test_accuracy_ci_low"] < row["test_accuracy_mean"] < row["test_accuracy_ci_high"] <= 1.0
        assert row["test_loss_ci_low"] >= 0.0  # losses: t interval, never below 0
    assert rows[0]["test_accuracy_ci_low"] == pytest.approx(0.0154, abs=1e-4)  # 97.50% [1.54, 100.00]
    cells = [float(x) for x in re.findall(r"(-?\d+\.\d+)%? \[(-?\d+\.\d+), (-?\d+\.\d+)\]", text)[0]]
    assert cells == [97.5, 1.54, 100.0]
    percents = [float(x) for x in re.findall(r"(-?\d+\.\d+)%", (exp / "results.md").read_text())]
    assert percents and all(0.0 <= p <= 100.0 for p in percents)
    method = "Student t interval on the logit scale, mapped back (never outside 0 to 100%)"
    assert method in (exp / "results.md").read_text() and method in text.replace("\n", " ")  # named under the table


def test_fewer_than_five_seeds_the_verdict_is_inconclusive_whatever_p(tmp_path: Path) -> None:
    exp = fake_experiment(tmp_path / "few", {"digits-mlp": [0.90, 0.901, 0.899], "digits-cnn": [0.97, 0.971, 0.969]})
    rows = collect(exp)
    text = write_tables(exp, rows, width=200)
    table = read_csv(exp / "results.csv")
    assert float(table[1]["p_test_accuracy"]) < 0.001  # a huge, certain-looking gap at 3 seeds
    assert table[1]["outcome_test_accuracy"] == "inconclusive" and table[0]["outcome_test_accuracy"] == "reference"
    assert table[1]["verdict_test_accuracy"].startswith("inconclusive: digits-cnn vs digits-mlp on test accuracy at "
                                                        "3 seeds each, fewer than 5 per side, so the interval is too "
                                                        "wide to conclude")
    assert re.search(r"^digits-cnn .* inconclusive", "\n".join(table_lines(text)), re.M)
    assert "Fewer than 5 seeds (runs < 5): the interval is too wide to conclude" in text.replace("\n", " ")
    assert "beats" not in text and "lower test loss" not in text
    five = collect(fake_experiment(tmp_path / "five", FIVE))
    assert "digits-cnn beats digits-mlp" in write_tables(tmp_path / "five", five) and "Fewer than 5" not in \
        (tmp_path / "five" / "results.md").read_text()


# -- 2. the printed table fits the terminal ------------------------------------------------------

@pytest.mark.parametrize("width", [80, 100])
def test_printed_table_fits_the_width_with_the_essential_columns_first(tmp_path: Path, width: int) -> None:
    exp = fake_experiment(tmp_path / "w", FIVE)
    text = write_tables(exp, collect(exp), width=width)
    lines = table_lines(text)
    assert max(map(len, lines)) <= width and len(lines) == 2 + 3
    headers = re.split(r"\s{2,}", lines[0])
    assert headers[:5] == ["model", "test acc 95% CI", "diff (points)", "p (Holm)", "verdict"]
    assert re.split(r"\s{2,}", lines[3])[:5:4] == ["digits-cnn", "better"]
    full = (exp / "results.md").read_text().splitlines()[0]  # every column stays in the file
    assert all(h in full for h in ("params", "seconds", "val acc", "test loss (mean ± std)", "MACs"))
    dropped = [h for h in ("params", "seconds", "test loss 95% CI", "MACs") if h not in lines[0]]
    assert dropped and f"Not shown, to fit {width} characters" in text.replace("\n", " ")
    assert all(len(line) <= width for line in text.split("\n\n")[1].splitlines())  # the notes too


def test_100_columns_keep_size_and_time_80_do_not(tmp_path: Path) -> None:
    two = {k: v for k, v in FIVE.items() if k.startswith("digits")}  # the README's comparison
    exp = fake_experiment(tmp_path / "w", two)
    at_100, at_80 = (table_lines(table_text(collect(exp), width=w)) for w in (100, 80))
    assert re.split(r"\s{2,}", at_100[0]) == ["model", "test acc 95% CI", "diff (points)", "p", "verdict", "runs",
                                             "params", "seconds"]
    assert re.split(r"\s{2,}", at_80[0]) == ["model", "test acc 95% CI", "diff (points)", "p", "verdict", "runs"]
    assert re.split(r"\s{2,}", at_80[3]) == ["digits-cnn", "92.00% [90.96, 92.93]", "+2.0 [0.8, 3.2]", "0.0039",
                                            "better", "5"]


def test_wide_prints_every_column_and_unknown_width_is_100(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = fake_experiment(tmp_path / "w", FIVE)
    rows = collect(exp)
    wide = table_lines(write_tables(exp, rows, wide=True, width=80))
    assert max(map(len, wide)) > 100 and "MACs" in wide[0] and "best epoch" in wide[0]
    monkeypatch.setenv("COLUMNS", "80")
    assert max(map(len, table_lines(table_text(rows)))) <= 80
    monkeypatch.delenv("COLUMNS")  # under pytest stdout is captured, not a terminal: 100
    if not os.isatty(sys.__stdout__.fileno()):
        assert 80 < max(map(len, table_lines(table_text(rows)))) <= 100


def test_my_functions_print_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    exp = fake_experiment(tmp_path / "quiet", FIVE)
    rows = collect(exp)
    write_tables(exp, rows), table_text(rows, wide=True)
    assert capsys.readouterr() == ("", "")


# -- 3. no validation columns without validation data (val_size=0) ---------------------------------

def test_val_size_0_tables_have_no_validation_columns(tmp_path: Path) -> None:
    exp = fake_experiment(tmp_path / "v0", FIVE, validation=runs.TEST_AS_VALIDATION)
    rows = collect(exp)
    assert all(row["val_accuracy_n"] == 0 and row["val_loss_mean"] is None for row in rows)  # test numbers, not val
    text = write_tables(exp, rows, wide=True)
    assert "val " not in table_lines(text)[0] and "no validation columns" in text.replace("\n", " ")
    assert not [k for k in read_csv(exp / "results.csv")[0] if k.startswith("val_")]
    assert "val " not in (exp / "results.md").read_text().splitlines()[0]
    record = read_experiment(exp)
    assert all("val" not in header for header in points_table(record).headers)
    assert all("val" not in header for header in runs_table(record).headers)
    summary = run_summary_table(record.points[0].runs[0].result, [])
    assert [r["field"] for r in summary.rows if "val" in r["field"]] == ["validated on"]
    with_val = fake_experiment(tmp_path / "v", FIVE)  # the same runs with a validation split keep them
    assert "val acc" in table_lines(write_tables(with_val, collect(with_val), wide=True))[0]
    assert "best val accuracy" in points_table(read_experiment(with_val)).headers
    assert "val_accuracy_mean" in read_csv(with_val / "results.csv")[0]


def test_report_points_table_interval_is_bounded(tmp_path: Path) -> None:
    record = read_experiment(fake_experiment(tmp_path / "r", {"a": [0.99, 0.96], "b": [0.5, 0.7]}))
    table = points_table(record)
    cells = dict(zip(table.headers, table.cells()[0]))
    low, high = (float(x) for x in re.findall(r"([\d.]+)%", cells["test accuracy 95% CI"]))
    assert 0.0 <= low < 97.5 < high <= 100.0 and "logit" in table.caption and "too wide to conclude" in table.caption


# -- 5. an override of a field the experiment varies is refused -------------------------------------

def test_override_of_a_varied_field_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    path = REPO / "examples" / "activation.yaml"
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides=["epochs=1", "model=cnn-small"])
    assert str(info.value) == ("override model=cnn-small: the experiment varies model (mlp:128-64, "
                               "cnn:16-32/k3/fc128); change the file's grid/zip instead")
    zipped = tmp_path / "z.yaml"
    zipped.write_text("base: {dataset: digits}\nzip: {model: [digits-mlp, digits-cnn], lr: [0.1, 0.01]}\n")
    with pytest.raises(ConfigError, match=r"^override lr=0.5: the experiment varies lr \(0.1, 0.01\); change"):
        load_experiment(zipped, overrides=["lr=0.5"])
    assert len(load_experiment(path, overrides=["epochs=1", "batch-size=32"]).points) == 4  # base fields: fine


def test_cli_exits_2_for_an_override_of_a_varied_field(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    from tinyvision.cli import main

    rc = main(["run", str(REPO / "examples" / "activation.yaml"), "model=cnn-small", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and err.count("\n") == 1 and "the experiment varies model" in err
    assert list(tmp_path.iterdir()) == []  # nothing ran


@pytest.mark.slow
def test_piped_run_prints_a_table_of_at_most_100_columns(tmp_path: Path) -> None:
    spec = tmp_path / "lr.yaml"
    spec.write_text("name: lr\nbase: {dataset: digits, model: 'mlp:8', epochs: 1, threads: 1, train_subset: 200}\n"
                    "grid: {lr: [0.001, 0.01]}\nrepeats: 2\n")
    env = {**os.environ, "TINYVISION_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("COLUMNS", None)
    done = subprocess.run([sys.executable, "-m", "tinyvision.cli", "run", str(spec), "--out", str(tmp_path),
                           "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = table_lines(done.stdout)
    assert lines[0].startswith("lr ") and len(lines) == 4 and max(map(len, lines)) <= 100
    assert "inconclusive" in lines[3] and "Fewer than 5 seeds" in done.stdout.replace("\n", " ")
