"""`tinyvision run EXP.yaml --shard I/N`: disjoint slices of an experiment's runs written by several
processes into one directory, then merged by a plain `run` that trains nothing twice."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tinyvision import runs
from tinyvision.files import load_weights
from tinyvision.cli import main
from tinyvision.errors import ConfigError
from tinyvision.experiments import build_experiment, run_experiment
from tinyvision.experiments.runner import Shard, finished_runs, jobs_of

REPO = Path(__file__).resolve().parents[1]
# 6 runs (3 points x 2 seeds), about a second each; threads=1 so that three shard processes on two
# cores compute what one process alone does (the thread count decides the float reductions)
SPEC = {"name": "sharded", "base": {"dataset": "digits", "model": "digits-mlp", "epochs": 2, "threads": 1,
                                    "train_subset": 300},
        "grid": {"lr": [0.05, 0.01, 0.002]}, "repeats": 2}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def cli(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tinyvision.cli", *args], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_dirs(exp_dir: Path) -> list[Path]:
    manifest = json.loads((exp_dir / "manifest.json").read_text())
    return [exp_dir / r["dir"] for p in manifest["points"] for r in p["runs"]]


def trained_lines(stderr: str) -> list[str]:
    """The `[k/n] p00 lr=... seed 0: test acc ...% (1.2s)` lines of runs a process trained itself."""
    return [line.split("] ", 1)[1].split(":")[0] for line in stderr.splitlines()
            if line.startswith("[") and "test acc" in line and "skipped" not in line]


def comparable(run_dir: Path) -> dict:
    """What must not depend on how the runs were spread over processes: every number but timings."""
    result = runs.read_result(run_dir)
    metrics = [{k: v for k, v in row.items() if "seconds" not in k} for row in runs.read_metrics(run_dir)]
    weights, meta = load_weights(run_dir / runs.WEIGHTS)
    return {"test": {k: v for k, v in result["test"].items() if k != "seconds"}, "metrics": metrics,
            "best_epoch": result["best_epoch"], "meta": meta,
            "weights": {k: v.numpy().tobytes() for k, v in weights.items()}}


@pytest.mark.parametrize("text,expected", [("0/1", Shard(0, 1)), ("2/3", Shard(2, 3)), ("0/12", Shard(0, 12))])
def test_shard_parses_zero_based(text: str, expected: Shard) -> None:
    assert Shard.parse(text) == expected and str(expected) == text


@pytest.mark.parametrize("text", ["3/3", "-1/3", "1/0", "1", "a/b", "1/3/4", "/3", ""])
def test_a_bad_shard_is_one_line_naming_the_flag(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        Shard.parse(text)
    assert str(info.value).startswith("--shard") and "0 to N-1" in str(info.value)
    assert "\n" not in str(info.value)


def test_shards_are_disjoint_and_cover_every_run(tmp_path: Path) -> None:
    jobs = jobs_of(build_experiment({**SPEC, "repeats": 5}), tmp_path)  # 15 runs
    for count in (1, 2, 4, 15, 20):
        slices = [Shard(i, count).select(jobs) for i in range(count)]
        dirs = [job.run_dir for part in slices for job in part]
        assert sorted(dirs) == sorted(j.run_dir for j in jobs) and len(set(dirs)) == len(jobs)
        assert max(map(len, slices)) - min(map(len, slices)) <= 1  # balanced


def test_cli_refuses_a_bad_shard_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(SPEC))
    code = main(["run", str(tmp_path / "exp.yaml"), "--shard", "3/3", "--exp-dir", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--shard '3/3'" in err
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_a_shard_writes_tables_only_when_every_run_is_finished(tmp_path: Path, capsys) -> None:
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({**SPEC, "repeats": 1, "base": {**SPEC["base"], "epochs": 1}}))
    base = ["run", str(tmp_path / "exp.yaml"), "--exp-dir", str(tmp_path / "e"), "--quiet", "--no-report"]
    assert main([*base, "--shard", "1/2"]) == 0
    out = capsys.readouterr().out
    assert "1 of 3 runs finished; run without --shard to merge" in out
    assert not (tmp_path / "e" / "results.csv").exists()
    assert finished_runs(tmp_path / "e") == (1, 3)
    assert main([*base, "--shard", "0/2"]) == 0  # the last shard: every run finished, it writes the tables
    assert "run without --shard" not in capsys.readouterr().out
    assert (tmp_path / "e" / "results.csv").exists() and finished_runs(tmp_path / "e") == (3, 3)


@pytest.mark.slow
def test_three_shard_processes_at_once_then_the_merge_trains_nothing_twice(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(SPEC))
    exp_dir = tmp_path / "shared"
    # one run at a time, as the reference below: a run trained in a population matches it to fp32
    # rounding only (tests/test_stacked.py), and which runs meet in a shard's population varies
    shards = [cli(tmp_path, "run", "exp.yaml", "--exp-dir", str(exp_dir), "--no-report", "--shard", f"{i}/3",
                  "--population", "1") for i in range(3)]
    done = [(p.wait(timeout=600), *p.communicate()) for p in shards]
    assert [code for code, _, _ in done] == [0, 0, 0], [err[-2000:] for _, _, err in done]
    trained = [trained_lines(err) for _, _, err in done]
    every = [run for part in trained for run in part]
    assert [len(part) for part in trained] == [2, 2, 2] and len(set(every)) == 6  # disjoint, all there
    assert sum("run without --shard to merge" in out for _, out, _ in done) <= 2
    assert (exp_dir / "results.csv").exists()  # the last shard to finish saw every run finished
    written = {d: (runs.read_result(d)["started"], (d / runs.WEIGHTS).stat().st_mtime_ns) for d in run_dirs(exp_dir)}

    merge = cli(tmp_path, "run", "exp.yaml", "--exp-dir", str(exp_dir), "--no-report")
    code, out, err = merge.wait(timeout=600), *merge.communicate()
    assert code == 0 and trained_lines(err) == [] and err.count("skipped: done") == 6, err[-2000:]
    assert {d: (runs.read_result(d)["started"], (d / runs.WEIGHTS).stat().st_mtime_ns)
            for d in run_dirs(exp_dir)} == written  # nothing trained or rewritten twice
    assert "0.002" in out and "±" in out  # the table over every run

    _, rows, _ = run_experiment(build_experiment(SPEC), tmp_path / "alone", quiet=True, population=1)
    alone = run_dirs(tmp_path / "alone")
    assert [d.relative_to(tmp_path / "alone") for d in alone] == [d.relative_to(exp_dir) for d in written]
    for mine, theirs in zip(written, alone):
        assert comparable(mine) == comparable(theirs), mine
    merged = (exp_dir / "results.csv").read_text().splitlines()
    assert len(merged) == 4 and [r["completed"] for r in rows] == [2, 2, 2]
