"""Concurrency: parallel experiment and tuning workers, writers killed mid-write, one writer per run
directory. Whatever happens, every final file parses; only hidden `.tmp` files may be left over,
and the next writer of the directory removes them."""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinyvision import runs
from tinyvision.files import remove_temp_files
from tinyvision.cli import main
from tinyvision.experiments import build_experiment
from tinyvision.experiments.runner import execute, prepare_dir

REPO = Path(__file__).resolve().parents[1]
TINY = {"dataset": "digits", "model": "digits-mlp", "epochs": 1, "train_subset": 64, "val_size": 32}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def final_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".tmp")]


def assert_all_parse(folder: Path) -> None:
    """Every final file of every run directory under folder reads back whole."""
    for path in final_files(folder):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.name == runs.CONFIG:
            runs.read_config(path.parent)
        elif path.name == runs.METRICS:
            runs.read_metrics(path.parent)
        elif path.suffix == ".safetensors":
            from tinyvision.files import load_state, load_weights
            (load_state if path.name == runs.CHECKPOINT else load_weights)(path)
    for path in folder.rglob(".*"):
        assert path.name.endswith(".tmp"), path  # the only other thing a kill may leave


@pytest.mark.slow
def test_eight_worker_processes_write_200_runs_and_survive_a_killed_worker(tmp_path) -> None:
    exp = build_experiment({"name": "many", "base": {**TINY, "lr": 0.01},
                            "grid": {"lr": [0.001 * (i + 1) for i in range(20)]}, "repeats": 10})
    jobs = prepare_dir(exp, tmp_path / "many")
    assert len(jobs) == 200
    seen = {"workers": 0, "killed": None, "results": 0}

    def on_result(job, result) -> None:
        children = multiprocessing.active_children()
        seen["workers"] = max(seen["workers"], len(children))
        seen["results"] += 1
        if seen["killed"] is None and len(children) == 8 and seen["results"] >= 192:
            victim = random.Random(0).choice(children)  # late: fewer runs to redo, fewer workers to start
            seen["killed"] = victim.pid
            os.kill(victim.pid, signal.SIGKILL)  # mid-run, maybe mid-write: the lost runs are redone

    start = time.perf_counter()
    results = execute(jobs, workers=8, quiet=True, on_result=on_result, population=1)  # 200 units
    took = time.perf_counter() - start
    assert seen["workers"] == 8 and seen["killed"] is not None
    assert len(results) == 200 and all(r["status"] == "completed" for r in results)
    complete = [j for j in jobs if runs.is_complete(j.run_dir)]
    assert len(complete) == 200 and len({j.run_dir for j in complete}) == 200
    assert_all_parse(tmp_path / "many")
    leftovers = list((tmp_path / "many").rglob("*.tmp"))
    print(f"\nconcurrency: 200 runs written by 8 worker processes (one SIGKILLed, its runs redone) in {took:.0f}s; "
          f"200 complete, 0 lost, {len(leftovers)} .tmp leftovers")
    assert not leftovers  # the runs the dead worker left were redone, and their leftovers removed


WRITER = """
import json, os, sys, time
from pathlib import Path
from tinyvision.files import atomic_write
folder, me = Path(sys.argv[1]), int(sys.argv[2])
blob = "x" * 400_000  # big enough that a kill often lands inside a write
print("ready", flush=True)
i = 0
while True:
    i += 1
    for name in (f"own-{me}-{i % 5}.json", "shared.json"):  # its own files, and one all share
        atomic_write(folder / name, json.dumps({"writer": me, "i": i, "blob": blob, "end": True}))
"""


@pytest.mark.slow
def test_writers_killed_mid_write_leave_only_whole_files(tmp_path) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    kills = 0
    rng = random.Random(1)
    for _ in range(2):
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(k)], env=env(),
                                    stdout=subprocess.PIPE, text=True) for k in range(4)]
        for w in writers:
            assert w.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.2, 0.6))  # four processes racing each other through atomic_write
        for w in writers:
            w.send_signal(signal.SIGKILL)
            w.wait()
            w.stdout.close()
            kills += 1
        for path in final_files(folder):
            data = json.loads(path.read_text())  # whole: never half of one write, never two mixed
            assert data["end"] is True and len(data["blob"]) == 400_000
        assert all(p.name.endswith(".tmp") for p in folder.glob(".*"))
    assert json.loads((folder / "shared.json").read_text())["writer"] in range(4)
    cut = len(remove_temp_files(folder))  # what the next writer of the folder does first
    assert not list(folder.glob(".*"))
    print(f"\natomic writes: {kills} writers SIGKILLed, {cut} writes cut short (left as .tmp), "
          f"{len(final_files(folder))} final files all whole")


def test_one_writer_per_run_directory(tmp_path, capsys) -> None:
    """A second process may not write a run directory in use; the first keeps it intact."""
    import tinyvision as tv

    run_dir = tmp_path / "run"
    tv.train({**TINY, "threads": 1}, run_dir=run_dir, quiet=True)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(["train", "--resume", str(run_dir)])
        err = capsys.readouterr().err
        assert rc == 1 and err.count("\n") == 1 and "being written by another process" in err
        exp = build_experiment({"name": "e", "base": {**TINY, "threads": 1}})
        job = prepare_dir(exp, tmp_path / "e")[0]
        job.run_dir.mkdir(parents=True)
        os.rename(run_dir, job.run_dir)  # the holder's lock moves with the directory
        assert execute([job], quiet=True)[0]["status"] == "busy"
        assert {p.name: p.read_bytes() for p in job.run_dir.iterdir()} == before  # untouched
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


@pytest.mark.slow
def test_four_tuning_workers_share_one_study(tmp_path) -> None:
    import optuna

    from tinyvision.experiments.tune import tune
    from tinyvision.experiments.tune_spec import build_tune

    spec = build_tune({"name": "t", "base": TINY, "search": {"lr": {"low": 1e-3, "high": 3e-2, "log": True}},
                       "trials": 8, "sampler": {"startup_trials": 4}})
    summary = tune(spec, tmp_path, workers=4, quiet=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal")))
    trials = optuna.load_study(study_name="t", storage=storage).get_trials()
    assert len(trials) == 8 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 4  # four processes really ran them
    assert len({t.number for t in trials}) == 8
    assert len(summary["rows"]) == 8
    for t in trials:
        assert runs.is_complete(t.user_attrs["run_dir"])
    assert_all_parse(tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN], ids=["sigint-default", "sigint-ignored"])
def test_ctrl_c_stops_a_parallel_experiment(tmp_path, inherited) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) stops the running runs at their
    next step with a checkpoint, starts no other run, and exits 130 - also when the process was
    started with SIGINT ignored, as a script's background job is (the workers stop on it anyway).
    Runs one at a time (--population 1); a stopped population: test_population_resume.py."""
    (tmp_path / "exp.yaml").write_text("name: int\nbase: {dataset: digits, model: 'mlp:512-512', epochs: 40, "
                                       "batch_size: 16}\ngrid: {lr: [0.001, 0.002, 0.003, 0.004, 0.005, 0.006]}\n")
    with open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tinyvision.cli", "run", "exp.yaml", "--jobs", "2",
                                 "--exp-dir", "e", "--no-report", "--population", "1"], cwd=tmp_path, env=env(), stderr=err,
                                stdout=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, inherited))
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("e/runs/*/seed0/checkpoint.safetensors")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert (tmp_path / "err").read_text().splitlines()[-1].startswith("tinyvision: interrupted")
    started = [d for d in tmp_path.glob("e/runs/*/seed0") if (d / runs.RESULT).exists()]
    assert 1 <= len(started) <= 2  # the running runs (two workers); none of the other four began
    for d in started:  # ... and they stopped resumable
        assert runs.read_result(d)["status"] == "interrupted" and (d / runs.CHECKPOINT).exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_stops_a_sequential_experiment(tmp_path, how) -> None:
    """Without --jobs the runs share the process: a stop signal ends the running run with a
    checkpoint and no later run starts (it used to stop only the run, and the next one began).
    Runs one at a time (--population 1); a stopped population: test_population_resume.py."""
    (tmp_path / "exp.yaml").write_text("name: seq\nbase: {dataset: digits, model: 'mlp:512-512', epochs: 40, "
                                       "batch_size: 16}\ngrid: {lr: [0.001, 0.002, 0.003]}\n")
    with open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tinyvision.cli", "run", "exp.yaml", "--exp-dir", "e",
                                 "--no-report", "--population", "1"], cwd=tmp_path, env=env(), stderr=err, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("e/runs/*/seed0/checkpoint.safetensors")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(how)
    assert proc.wait(timeout=60) == 130
    assert (tmp_path / "err").read_text().splitlines()[-1].startswith("tinyvision: interrupted")
    [started] = [d for d in tmp_path.glob("e/runs/*/seed0") if (d / runs.RESULT).exists()]
    assert runs.read_result(started)["status"] == "interrupted" and (started / runs.CHECKPOINT).exists()


def _spawned_workers(parent: int) -> list[int]:
    """PIDs of the multiprocessing spawn children of `parent` (from /proc; not the resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"spawn_main" in cmd:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_a_killed_tuning_worker_ends_tune_with_one_line_not_a_traceback(tmp_path) -> None:
    (tmp_path / "t.yaml").write_text("name: k\nbase: {dataset: digits, model: 'mlp:512-512', epochs: 300, "
                                     "batch_size: 16}\ntrials: 4\nsearch: {lr: {low: 1.0e-4, high: 1.0e-2, log: true}}\n")
    with open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tinyvision.cli", "tune", "t.yaml", "--jobs", "2",
                                 "--out", "o"], cwd=tmp_path, env=env(), stderr=err, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("o/k/trials/*/metrics.csv")) and time.monotonic() < deadline:
        time.sleep(0.05)  # a trial is under way
    workers = _spawned_workers(proc.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    assert proc.wait(timeout=60) == 1  # the other worker is not left waiting on the broken pool
    lines = (tmp_path / "err").read_text().splitlines()
    assert lines == ["tinyvision: error: a tuning worker process died (killed, or out of memory); the finished "
                     "trials are kept in the study: run the same command again to finish it"]
