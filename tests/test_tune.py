"""Tuning: tune-file validation, a real study on digits (journal file), worker processes sharing
one study through the journal file and through a real PostgreSQL server started here."""
from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import optuna
import pytest

from tinyvision import runs
from tinyvision.errors import ConfigError, TinyVisionError
from tinyvision.cli import build_parser, main
from tinyvision.experiments.tune import tune
from tinyvision.experiments.tune_spec import build_tune, load_tune
from tinyvision.experiments.tune_summary import format_summary

pytestmark = pytest.mark.slow  # the quick loop (-m 'not slow') leaves it out: Optuna studies of real trainings, PostgreSQL

BASE = {"dataset": "digits", "model": "digits-mlp", "epochs": 3}
SEARCH = {"lr": {"low": 1.0e-3, "high": 3.0e-2, "log": True}, "batch_size": [32, 64]}


def small_spec(**fields):
    return build_tune({"name": "t", "base": BASE, "search": SEARCH, "trials": 4,
                       "sampler": {"startup_trials": 2}, **fields})


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.state.is_finished()]


# -- 1. the tune file ----------------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"trails": 5}, "'trails'"),
    ({"trials": 0}, "'trials'"),
    ({"direction": "maximize"}, "'direction'"),
    ({"search": {}}, "'search'"),
    ({"pruner": {"warmup": 1}}, "'pruner.warmup'"),
    ({"sampler": {"seed": -1}}, "'sampler.seed'"),
    ({"search": {"learning_rate": [0.1]}}, "search.learning_rate"),
    ({"search": {"seed": [0, 1]}}, "search.seed"),
    ({"search": {"lr": {"low": 0.1, "high": 0.01}}}, "search.lr"),
    ({"search": {"lr": {"low": 0.0, "high": 0.1, "log": True}}}, "search.lr"),
    ({"search": {"lr": {"low": 1e-4, "high": 0.1, "lg": True}}}, "'lg'"),
    ({"search": {"lr": "1e-3..1e-1"}}, "search.lr"),
    ({"search": {"batch_size": []}}, "search.batch_size"),
    ({"search": {"batch_size": {"low": 16, "high": 64, "int": False}}}, "search.batch_size"),
    ({"search": {"epochs": {"low": 1.5, "high": 4}}}, "search.epochs"),
    ({"search": {"optimizer": ["sgd", "rmsprop"]}}, "'optimizer'"),
    ({"search": {"dropout": {"low": 0.0, "high": 1.0}}}, "'dropout'"),
    ({"base": {**BASE, "optimizer": "sgd", "momentum": 0.9, "nesterov": True}, "search": {"optimizer": ["sgd", "adam"]}},
     "optimizer=adam"),
    ({"base": {**BASE, "epoch": 3}}, "'epoch'"),
])
def test_tune_file_errors_name_the_field(change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build_tune({"name": "t", "base": BASE, "search": SEARCH, **change})


def test_tune_file_loads_with_overrides(tmp_path):
    path = tmp_path / "digits-tune.yaml"
    path.write_text("base: {dataset: digits, model: digits-cnn, epochs: 15}\n"
                    "search:\n  lr: {low: 1.0e-4, high: 1.0e-1, log: true}\n  batch_size: [32, 64, 128]\n"
                    "  optimizer: [sgd, adam]\n  dropout: {low: 0.0, high: 0.5}\n"
                    "  epochs: {low: 5, high: 20, int: true}\ntrials: 20\ndirection: minimize\n")
    spec = load_tune(path, overrides=["model=digits-mlp", "epochs=2"])
    assert spec.name == "digits-tune" and spec.base.model == "digits-mlp" and spec.base.epochs == 2
    assert list(spec.space) == ["lr", "batch_size", "optimizer", "dropout"]  # a fixed field leaves the search
    assert spec.space["lr"].log and not spec.space["lr"].integer and spec.space["batch_size"].choices == (32, 64, 128)
    assert not spec.space["dropout"].integer


# -- 2. a study on digits ------------------------------------------------------------------------

def test_study_on_digits_writes_runs_and_feeds_the_pruner(tmp_path):
    spec = small_spec(trials=5, pruner={"startup_trials": 2, "warmup_epochs": 0})
    summary = tune(spec, tmp_path, quiet=True)

    study = optuna.load_study(study_name="t", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))))
    done = finished(study)
    assert summary["trials"] == len(done) == 5 and summary["pruned"] == sum(t.state.name == "PRUNED" for t in done)
    for t in done:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == (tmp_path / "trials" / f"trial-{t.number:04d}").resolve() and t.user_attrs["trial"] == t.number
        metrics = runs.read_metrics(run_dir)
        # one report per epoch, the epoch's validation NLL, step = epoch
        assert {int(r["epoch"]): r["val_loss"] for r in metrics} == pytest.approx(t.intermediate_values)
        assert runs.read_result(run_dir)["status"] == {"COMPLETE": "completed", "PRUNED": "pruned"}[t.state.name]
        if t.state.name == "COMPLETE":
            assert len(t.intermediate_values) == 3
            assert t.value == pytest.approx(runs.read_result(run_dir)["best_val"]["loss"])
        assert not (run_dir / runs.CHECKPOINT).exists()

    best = study.best_trial
    assert summary["best_trial"] == best.number and summary["best_value"] == pytest.approx(best.value)
    assert summary["best_params"] == best.params
    best_dir = Path(summary["best_run_dir"])
    assert best_dir == tmp_path / "best" and runs.is_complete(best_dir)
    assert {p.name for p in best_dir.iterdir()} == {runs.CONFIG, runs.METRICS, runs.RESULT, runs.WEIGHTS}
    assert runs.read_config(best_dir).lr == pytest.approx(best.params["lr"])
    assert json.loads((tmp_path / "tune.json").read_text())["best_trial"] == best.number
    assert f"best: trial {best.number}" in format_summary(summary)

    again = tune(spec, tmp_path, quiet=True)  # the study already holds 5: nothing more runs
    assert again["trials"] == 5 and len(study.get_trials()) == 5
    with pytest.raises(TinyVisionError, match="different"):
        tune(small_spec(search={"lr": [0.01]}), tmp_path, quiet=True)


def test_a_failed_trial_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    from tinyvision import pipeline

    real_train, calls = pipeline.train, []

    def flaky_train(config, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise TinyVisionError("data file vanished")
        return real_train(config, **kwargs)

    monkeypatch.setattr(pipeline, "train", flaky_train)
    summary = tune(small_spec(trials=3, base={**BASE, "epochs": 1}), tmp_path, quiet=True)
    assert (summary["trials"], summary["failed"]) == (3, 1)
    failed = next(r for r in summary["rows"] if r["state"] == "fail")
    assert failed["reason"] == "data file vanished"
    assert runs.read_result(failed["run_dir"])["status"] == "failed"


def test_cli_helper(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps({"base": BASE, "search": {"lr": [0.01, 0.02]}}))
    args = build_parser().parse_args(["tune", str(path), "epochs=1", "--trials", "2", "--out",
                                      str(tmp_path / "out"), "--study-name", "smoke", "--quiet"])
    assert (args.jobs, args.storage) == (1, None)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "trial   1 complete" in out and "best: trial" in out
    assert runs.is_complete(tmp_path / "out" / "smoke" / "best")


# -- 3. worker processes sharing a study -----------------------------------------------------------

def assert_shared_study(summary: dict, storage, trials: int) -> None:
    study = optuna.load_study(study_name="t", storage=storage)
    done = finished(study)
    assert summary["trials"] == len(done) == len(study.get_trials()) == trials
    assert sorted(t.number for t in done) == list(range(trials))
    assert len({t.user_attrs["pid"] for t in done}) == 2  # two processes really shared it
    assert all(t.user_attrs["pid"] != os.getpid() for t in done)
    assert runs.is_complete(summary["best_run_dir"])


def test_two_worker_processes_share_the_journal_file(tmp_path):
    summary = tune(small_spec(base={**BASE, "epochs": 1}), tmp_path, workers=2, quiet=True)
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal")))
    assert_shared_study(summary, journal, 4)
    for row in summary["rows"]:
        assert runs.read_config(row["run_dir"]).threads == max(1, len(os.sched_getaffinity(0)) // 2)


# -- 4. ... and a real PostgreSQL server ----------------------------------------------------------

def _as_postgres_user() -> list[str]:
    """Command prefix: PostgreSQL refuses to run as root, so root runs it as `postgres`."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to run the server as")
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]


def _run(prefix: list[str], *cmd: str) -> None:
    argv = [*prefix, shlex.join(cmd)] if prefix[:1] == ["su"] else [*prefix, *cmd]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL cluster in a temporary folder, on a free localhost port."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 missing: pip install 'tinyvision[postgres]'")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),  # newest major version last
                   key=lambda p: [int(x) for x in Path(p).parts[4].split(".") if x.isdigit()])
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb or not Path(initdb).with_name("pg_ctl").exists():
        pytest.skip("PostgreSQL server not installed: run scripts/install-postgres as root "
                    "(Debian package postgresql)")
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    prefix = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="tinyvision-pg-"))  # not under pytest's root-only folders
    if prefix:
        shutil.chown(root, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = root / "data", root / "server.log"
    try:
        _run(prefix, initdb, "-D", str(data), "--auth=trust", "-U", "postgres", "--no-sync")
        _run(prefix, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o",
             f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    except subprocess.CalledProcessError as exc:
        server_log = log.read_text() if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr}{exc.stdout}\n{server_log}")
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE tinyvision_test")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/tinyvision_test"
    finally:
        _run(prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_worker_processes_share_a_postgres_study(tmp_path, postgres_url):
    summary = tune(small_spec(base={**BASE, "epochs": 1}), tmp_path, storage=postgres_url, workers=2, quiet=True)
    assert summary["storage"] == postgres_url and not (tmp_path / "study.journal").exists()
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; these tests install psycopg2
    assert_shared_study(summary, postgres_url.replace("postgresql://", "postgresql+psycopg2://"), 4)


def test_sqlite_serves_one_process_only(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(TinyVisionError, match="one process"):
        tune(small_spec(), tmp_path / "two", storage=url, workers=2)
    summary = tune(small_spec(trials=2, base={**BASE, "epochs": 1}), tmp_path / "one", storage=url, quiet=True)
    assert summary["trials"] == len(finished(optuna.load_study(study_name="t", storage=url))) == 2


def test_a_rerun_fails_the_trials_whose_worker_process_is_gone(tmp_path):
    import sys

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.journal")))
    study = optuna.create_study(storage=storage, study_name="s")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid names no process now
    for pid, host in ((dead.pid, socket.gethostname()), (os.getpid(), socket.gethostname()),
                      (dead.pid, "another-machine")):
        trial = study.ask()
        trial.set_user_attr("pid", pid)
        trial.set_user_attr("host", host)
    from tinyvision.experiments.tune_study import fail_abandoned_trials

    assert fail_abandoned_trials(study) == [0]  # not the live process's, not another machine's
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "RUNNING", "RUNNING"]


def test_a_missing_field_is_named_without_dumping_the_file():
    with pytest.raises(ConfigError) as info:
        build_tune({"name": "t", "base": BASE})
    assert str(info.value) == "tune field 'search' is required"


def test_each_trial_is_printed_once(tmp_path, capsys):
    """Live lines on stderr as trials end; the final table lists only trials not printed live."""
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps({"base": BASE, "search": {"lr": [0.01, 0.02]}}))
    command = ["tune", str(path), "epochs=1", "--trials", "2", "--out", str(tmp_path / "out"), "--study-name", "s"]
    assert main(command) == 0
    first = capsys.readouterr()
    lines = (first.out + first.err).splitlines()
    for n in (0, 1):
        assert sum(bool(re.match(rf"\s*trial\s+{n}\b", line)) for line in lines) == 1, lines
    assert main([*command[:4], "3", *command[5:]]) == 0  # one more trial: the two earlier ones are listed
    second = capsys.readouterr()
    lines = (second.out + second.err).splitlines()
    assert [sum(bool(re.match(rf"\s*trial\s+{n}\b", line)) for line in lines) for n in (0, 1, 2)] == [1, 1, 1]
