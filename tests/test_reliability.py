"""Reliability: kills and signals during training, hostile model files, numerical faults, corrupt
inputs (also under `python -O`), config errors and determinism.

The kill and signal tests run the real `python -m tinyvision.cli train` in subprocesses and compare
the finished runs bit for bit with one uninterrupted run of the same seed (CPU, one thread).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest
import torch

import tinyvision as tv
from tinyvision import runs
from tinyvision.files import load_state, load_weights
from tinyvision.cli import main

REPO = Path(__file__).resolve().parents[1]
# dropout + augmentation draw random numbers every step, a per-step schedule and Adam carry state:
# a resume that restored any of it wrongly would change the weights. The wide MLP makes an 18 MB
# checkpoint (weights, two Adam moments, best weights), so kills often land inside its write.
KILL_RUN = ["train", "--dataset", "digits", "--model", "mlp:1024-1024", "--epochs", "8", "--seed", "3",
            "--batch-size", "32", "dropout=0.2", "augment=translate", "schedule=onecycle", "lr=0.003",
            "threads=1", "--quiet", "--no-report"]
# The CNNs train channels_last (their optimiser state must come back in that layout), in bf16 and
# fp32, under each optimiser people use; unpooled 8x8 maps into fc256 make 12-24 MB checkpoints.
_CNN = ["train", "--dataset", "digits", "--epochs", "8", "--seed", "4", "--batch-size", "32", "threads=1",
        "--quiet", "--no-report"]
KILL_CASES = {  # name: (command, kills per chain); two chains run at once
    "mlp-adam-fp32-onecycle": (KILL_RUN, 10),
    "cnn-sgd-momentum-bf16-cosine": ([*_CNN, "--model", "cnn:32-64/k3/nopool/fc256", "optimizer=sgd",
                                      "momentum=0.9", "lr=0.02", "precision=bf16", "schedule=cosine",
                                      "augment=translate"], 2),
    "cnn-adam-bf16-onecycle": ([*_CNN, "--model", "cnn:32-64/k3/nopool/bn/fc256/drop0.2", "optimizer=adam",
                                "lr=0.003", "precision=bf16", "schedule=onecycle", "augment=translate"], 2),
    "cnn-adamw-fp32-step": ([*_CNN, "--model", "cnn:32-64/k3/nopool/bn/fc256", "optimizer=adamw",
                             "weight_decay=0.05", "precision=fp32", "schedule=step", "step_size=2"], 2),
    "cnn-adamax-fp32": ([*_CNN, "--model", "cnn:32-64/k3/nopool/fc256", "optimizer=adamax", "lr=0.002",
                         "precision=fp32", "augment=translate"], 2),
    # a user's own module from its file: batch norm and dropout (its masks from the restored RNG)
    "own-module-adam-fp32": ([*_CNN, "--model", f"{REPO / 'examples' / 'own-model' / 'net.py'}:Net",
                              "model_args={width: 48}", "optimizer=adam", "lr=0.003", "precision=fp32",
                              "augment=translate"], 2),
}
WALL_CLOCK = {"seconds", "val_seconds"}  # the only metrics.csv columns that may differ


# --- helpers -----------------------------------------------------------------------------------

def env() -> dict[str, str]:
    return {**os.environ, "TINYVISION_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def start_cli(cwd: Path, *args: object, log: str = "log") -> subprocess.Popen:
    """`python -m tinyvision.cli ARGS` in the background, output to cwd/<log>.out|.err."""
    out, err = (open(cwd / f"{log}.{s}", "ab") for s in ("out", "err"))
    with out, err:
        return subprocess.Popen([sys.executable, "-m", "tinyvision.cli", *map(str, args)], cwd=cwd,
                                env=env(), stdout=out, stderr=err)


def run_cli(cwd: Path, *args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyvision.cli", *map(str, args)], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(err: str, *needles: str) -> None:
    """stderr is exactly one `tinyvision: error:` line (no traceback) containing every needle."""
    assert err.startswith("tinyvision: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll every 2 ms until condition() or the process ends; True when the condition came first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError("timed out waiting")


def mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def temp_files(run_dir: Path, name: str = "") -> list[Path]:
    return list(run_dir.glob(f".{name}*.tmp"))


def metrics_text(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv as text cells, wall-clock columns dropped."""
    with (run_dir / runs.METRICS).open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in csv.DictReader(f)]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Bit-identical weights, metrics (but wall-clock seconds) and test metrics."""
    mine, ref = load_weights(run_dir / runs.WEIGHTS)[0], load_weights(reference / runs.WEIGHTS)[0]
    assert mine.keys() == ref.keys()
    assert all(torch.equal(mine[k], ref[k]) for k in ref), run_dir
    assert metrics_text(run_dir) == metrics_text(reference), run_dir
    test, ref_test = (runs.read_result(d)["test"] for d in (run_dir, reference))
    assert {**test, "seconds": 0} == {**ref_test, "seconds": 0}


def assert_resumable(run_dir: Path) -> None:
    """Whatever a kill left is readable: config, checkpoint, result and metrics parse."""
    if (run_dir / runs.CONFIG).exists():
        runs.read_config(run_dir)
    if (run_dir / runs.CHECKPOINT).exists():
        saved = load_state(run_dir / runs.CHECKPOINT)
        assert saved["epoch"] <= 8 and len(saved["entries"][0]["history"]) == saved["epoch"]
    if (run_dir / runs.RESULT).exists():
        assert runs.read_result(run_dir)["status"] in {"running", "interrupted", "completed"}
    if (run_dir / runs.METRICS).exists():
        runs.read_metrics(run_dir)


class Reference:
    """One uninterrupted run of a command, started on first use and shared by the module's tests."""

    def __init__(self, folder: Path, command: list[str] = KILL_RUN) -> None:
        self.folder, self.command, self.proc = folder, command, None

    def start(self) -> None:
        if self.proc is None:
            self.proc = start_cli(self.folder, *self.command, "--run-dir", "ref")

    def dir(self) -> Path:
        self.start()
        assert self.proc.wait(timeout=300) == 0, (self.folder / "log.err").read_text()
        return self.folder / "ref"


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Reference]:
    """An uninterrupted run of each kill case, started on first use."""
    return {name: Reference(tmp_path_factory.mktemp(f"reference-{name}"), command)
            for name, (command, _) in KILL_CASES.items()}


@pytest.fixture(scope="module")
def reference(references: dict[str, Reference]) -> Reference:
    return references["mlp-adam-fp32-onecycle"]


# --- kills ---------------------------------------------------------------------------------------

def _kill_when(how: str, proc: subprocess.Popen, run_dir: Path, rng: random.Random) -> Optional[str]:
    """Wait for the moment `how` names and send the signal; None if the run finished first."""
    ckpt, result = run_dir / runs.CHECKPOINT, run_dir / runs.RESULT
    ckpt_before, result_before = mtime(ckpt), mtime(result)

    def later(seconds: float) -> Callable[[], bool]:
        until = time.monotonic() + seconds
        return lambda: time.monotonic() >= until

    if how == "random":  # anywhere: start-up, training, validation, saving
        fired = wait_for(later(rng.uniform(0.5, 8.0)), proc)
    elif how in ("training", "sigterm"):  # some time after this process wrote status "running"
        fired = wait_for(lambda: mtime(result) != result_before, proc) and \
            wait_for(later(rng.uniform(0.0, 1.5)), proc)
    elif how == "checkpoint-write":  # while the checkpoint's temporary file is being written
        fired = wait_for(lambda: bool(temp_files(run_dir, runs.CHECKPOINT)), proc)
    elif how == "after-checkpoint":  # just after a checkpoint is renamed into place
        fired = wait_for(lambda: mtime(ckpt) != ckpt_before, proc)
    else:  # "final-write": while the best weights are written, at the very end
        fired = wait_for(lambda: bool(temp_files(run_dir, runs.WEIGHTS)), proc)
    if not fired:
        return None
    proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    return how


def _kill_chain(folder: Path, seed: int, kills_wanted: int, counts: dict[str, Any],
                command: list[str] = KILL_RUN) -> list[Path]:
    """Train, kill, resume (killed again)... until kills_wanted kills; every run dir finished last."""
    rng = random.Random(seed)
    done, run_dir, kills, sigterms = [], folder / "r0", 0, 0
    while True:
        resume = (run_dir / runs.CONFIG).exists()
        args = ["train", "--resume", run_dir.name, "--quiet", "--no-report"] if resume else \
            [*command, "--run-dir", run_dir.name]
        epochs_done = len(runs.read_metrics(run_dir)) if resume else 0
        ways = ["final-write", "training"] if epochs_done >= 7 else \
            ["random", "training", "checkpoint-write", "checkpoint-write", "after-checkpoint"] + \
            ["sigterm"] * (sigterms == 0)
        proc = start_cli(folder, *args, log=run_dir.name)
        how = _kill_when(rng.choice(ways), proc, run_dir, rng) if kills < kills_wanted else None
        rc = proc.wait(timeout=300)
        if rc == 0:  # the run finished on its own (or the signal came after its last step)
            how = None
        elif how == "sigterm" and rc == -signal.SIGTERM and runs.is_complete(run_dir):
            how, rc = None, 0  # the SIGTERM came after the run's last write, as the interpreter exited
        if how is None:
            assert rc == 0, (rc, (folder / f"{run_dir.name}.err").read_text()[-2000:])
            done.append(run_dir)
            if kills >= kills_wanted:
                return done
            run_dir = folder / f"r{len(done)}"  # another run of the same seed, to kill some more
            continue
        if how == "sigterm":
            assert rc == 130, (rc, (folder / f"{run_dir.name}.err").read_text()[-2000:])
            assert runs.read_result(run_dir)["status"] == "interrupted"  # a clean stop, checkpointed
            sigterms += 1
        else:
            assert rc == -signal.SIGKILL, rc
            kills += 1
        with counts["lock"]:
            counts[how if how == "sigterm" else "sigkill"] += 1
            counts["during-write"] += how != "sigterm" and bool(temp_files(run_dir))  # a write cut short
            counts["ways"][how] = counts["ways"].get(how, 0) + 1
        assert_resumable(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("case", KILL_CASES)
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, references, case) -> None:
    command, kills_per_chain = KILL_CASES[case]
    reference = references[case]
    reference.start()  # runs beside the kill chains
    counts: dict[str, Any] = {"sigkill": 0, "sigterm": 0, "during-write": 0, "ways": {},
                              "lock": threading.Lock()}
    chains, errors = [], []

    def chain(i: int) -> None:
        try:
            (tmp_path / f"chain{i}").mkdir()
            chains.append(_kill_chain(tmp_path / f"chain{i}", seed=1000 + i, kills_wanted=kills_per_chain,
                                      counts=counts, command=command))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=chain, args=(i,)) for i in range(2)]  # two cores: two chains
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    finished = [d for dirs in chains for d in dirs]
    for run_dir in finished:
        assert_same_run(run_dir, reference.dir())
        assert not temp_files(run_dir)  # the resumes cleaned up what the kills left
    print(f"\nkill test {case}: {counts['sigkill']} SIGKILLs survived ({counts['during-write']} cut a write "
          f"short; by moment: {counts['ways']}), {counts['sigterm']} SIGTERMs; {len(finished)} runs finished "
          "bit-identical to the uninterrupted run")
    assert counts["sigkill"] >= 2 * kills_per_chain


# --- Ctrl-C --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_stops_at_the_next_step_and_a_second_one_corrupts_nothing(tmp_path, reference) -> None:
    reference.start()
    run_dir = tmp_path / "run"
    # one Ctrl-C in the middle of epoch 2: a clean stop at the next step, checkpointed, exit 130
    proc = start_cli(tmp_path, *KILL_RUN, "--run-dir", "run", log="first")
    assert wait_for(lambda: (run_dir / runs.CHECKPOINT).exists(), proc)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "Traceback" not in (tmp_path / "first.err").read_text()
    result = runs.read_result(run_dir)
    assert result["status"] == "interrupted" and "--resume" in result["reason"]
    saved = load_state(run_dir / runs.CHECKPOINT)
    assert saved["epoch"] >= 1 and saved["step"] >= 1 and saved["partial"]["seen"] == 32 * saved["step"]
    assert len(runs.read_metrics(run_dir)) == saved["epoch"]

    # resumed, then two Ctrl-C in quick succession while a checkpoint is being written
    proc = start_cli(tmp_path, "train", "--resume", "run", "--quiet", "--no-report", log="second")
    assert wait_for(lambda: bool(temp_files(run_dir, runs.CHECKPOINT)), proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "Traceback" not in (tmp_path / "second.err").read_text()
    assert runs.read_result(run_dir)["status"] == "interrupted"
    assert load_state(run_dir / runs.CHECKPOINT)["epoch"] > saved["epoch"]

    done = run_cli(tmp_path, "train", "--resume", "run", "--quiet", "--no-report")
    assert done.returncode == 0, done.stderr
    assert_same_run(run_dir, reference.dir())
    assert not temp_files(run_dir)


# --- hostile model files -------------------------------------------------------------------------

class Evil:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def digit_pngs(folder: Path, count: int = 2) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(load_digits().images[:count]):
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8), mode="L").save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("small") / "run"
    tv.train(dict(dataset="digits", model="digits-mlp", epochs=1, threads=1), run_dir=run_dir, quiet=True)
    return run_dir


@pytest.mark.slow
def test_no_command_unpickles_a_hostile_file(tmp_path, capsys, small_run) -> None:
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(Evil(marker))
    pickle.loads(pickle.dumps(Evil(tmp_path / "live")))
    assert (tmp_path / "live").exists()  # the payload is live: plain unpickling runs it
    raw_pt, zip_pt = tmp_path / "evil.pt", tmp_path / "evil-zip.pt"
    raw_pt.write_bytes(payload)
    torch.save({"w": Evil(marker)}, zip_pt)  # torch's own zip format, same payload inside
    pngs = digit_pngs(tmp_path / "pngs")

    def refused(*args: object, needles: tuple[str, ...], code: int = 1) -> None:
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert rc == code and out == "", (rc, out, err)
        one_error_line(err, *needles)
        assert not marker.exists(), args

    for pt in (raw_pt, zip_pt):
        refused("predict", pt, pngs, needles=(str(pt), "refusing a pickle-based .pt file", "--trust-pickle"))
        # trusted: read with weights_only=True, which refuses the payload's global (exec)
        refused("predict", pt, pngs, "--trust-pickle", needles=(str(pt), "not a loadable weights-only file"))

    # the same bytes disguised as a run's safetensors files
    for disguise in (payload, zip_pt.read_bytes()):
        weights_run = Path(shutil.copytree(small_run, tmp_path / f"w{len(disguise)}"))
        (weights_run / runs.WEIGHTS).write_bytes(disguise)
        needle = f"{weights_run / runs.WEIGHTS}: expected a safetensors file"
        refused("predict", weights_run, pngs, needles=(needle,))
        refused("predict", weights_run / runs.WEIGHTS, pngs, "--trust-pickle", needles=(needle,))
        refused("evaluate", weights_run, needles=(needle,))
        assert main(["report", str(weights_run)]) == 0  # reports read no model file: nothing to unpickle
        capsys.readouterr()
        (weights_run / runs.PREDICTIONS).write_bytes(disguise)  # the file a report does read
        assert main(["report", str(weights_run)]) == 1  # written without the grids, and it says why
        err = capsys.readouterr().err
        assert f"{weights_run / runs.PREDICTIONS}: expected a safetensors file" in err
        report = (weights_run / "report.md").read_text()
        assert "Prediction grids skipped: " in report

        ckpt_run = Path(shutil.copytree(small_run, tmp_path / f"c{len(disguise)}"))
        (ckpt_run / runs.CHECKPOINT).write_bytes(disguise)
        refused("train", "--resume", ckpt_run, needles=(f"{ckpt_run / runs.CHECKPOINT}: expected a safetensors file",))
    assert not marker.exists()


# --- numerical faults ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_non_finite_loss_stops_within_one_step(tmp_path, monkeypatch, bad) -> None:
    """The loss is poisoned at one training step; the run stops at that very step."""
    import torch.nn.functional as F

    cfg = dict(dataset="digits", model="digits-mlp", epochs=5, batch_size=100, threads=1)
    steps = math.ceil(len(tv.pipeline.load_data(tv.make_config(cfg)).train) / 100)
    poisoned_at = 2 * steps + 4  # epoch 3, step 4
    real, calls = F.cross_entropy, [0]

    def cross_entropy(logits, target, **kwargs):
        loss = real(logits, target, **kwargs)
        if torch.is_grad_enabled():  # a training step (evaluation runs without grad)
            calls[0] += 1
            if calls[0] == poisoned_at:
                return loss * bad
        return loss

    monkeypatch.setattr(F, "cross_entropy", cross_entropy)
    run_dir, good = tmp_path / "run", {}
    result = tv.train(cfg, run_dir=run_dir, quiet=True,
                      on_epoch=lambda row: good.update(bytes=(run_dir / runs.CHECKPOINT).read_bytes()))
    assert calls[0] == poisoned_at  # not one step more
    assert result["status"] == "diverged" == runs.read_result(run_dir)["status"]
    assert result["reason"] == f"training loss became {bad} at epoch 3, step 4"
    assert (run_dir / runs.CHECKPOINT).read_bytes() == good["bytes"]  # the last good epoch's, untouched
    assert len(runs.read_metrics(run_dir)) == 2
    best = load_weights(run_dir / runs.WEIGHTS)[0]  # the best weights of the good epochs are kept
    saved = load_state(run_dir / runs.CHECKPOINT)["entries"][0]
    assert result["best_epoch"] == saved["best_epoch"] >= 1
    assert all(torch.equal(best[k], saved["best_state"][k]) for k in best)


def test_a_diverging_point_does_not_stop_the_experiment(tmp_path, capsys) -> None:
    from tinyvision.experiments import build_experiment, run_experiment
    from tinyvision.experiments.runner import execute, prepare_dir

    exp = build_experiment({"name": "lr", "base": {"dataset": "digits", "model": "digits-mlp", "epochs": 2,
                                                   "optimizer": "sgd", "threads": 1},
                            "grid": {"lr": [10.0, 0.05]}, "repeats": 1})
    exp_dir, rows, _ = run_experiment(exp, tmp_path / "lr", quiet=True)
    statuses = [runs.read_result(exp_dir / r["dir"])["status"]
                for p in json.loads((exp_dir / "manifest.json").read_text())["points"] for r in p["runs"]]
    assert statuses == ["diverged", "completed"]
    assert [r["completed"] for r in rows] == [0, 1]
    assert [bool(r.get("skipped")) for r in execute(prepare_dir(exp, exp_dir), quiet=True)] == [True, True]
    # the CLI says what happened
    rc = main(["train", "--dataset", "digits", "--model", "digits-mlp", "--optimizer", "sgd", "--lr", "10",
               "--epochs", "2", "threads=1", "--out", str(tmp_path / "cli"), "--no-report"])
    out, err = capsys.readouterr()
    # lr=10 overflows within the first steps; whether the loss first shows as nan or inf, and in which
    # of the first epochs, depends on the CPU's rounding
    assert rc == 1 and out.startswith("diverged: ")
    assert re.search(r"diverged: training loss became (nan|inf) at epoch [12]\b", err), err


# --- corrupt inputs (also under python -O) -------------------------------------------------------

def _idx(shape: tuple[int, ...], data: bytes, magic: int = 0x08) -> bytes:
    return bytes([0, 0, magic, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape) + data


def corrupt_files(folder: Path) -> list[tuple[str, Callable[[], Any], Path, tuple[str, ...]]]:
    """(case, parse call, the damaged file, what its one-line error must say)."""
    import scipy.io

    from tinyvision.files import save_state
    from tinyvision.data import formats
    from tinyvision.inference import read_image

    def put(name: str, data: bytes) -> Path:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    idx = _idx((10, 4, 4), bytes(160))
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"X": np.zeros((32, 32, 3, 20), np.uint8), "y": np.ones((20, 1), np.uint8)})
    bad_mat = io.BytesIO()
    scipy.io.savemat(bad_mat, {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    def tar(record: int) -> bytes:  # only the first batch; its records `record` bytes long
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for name, data in (("batches.meta.txt", b"a\nb\n"), ("data_batch_1.bin", bytes(2 * record))):
                info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    npz = io.BytesIO()
    np.savez(npz, x=np.zeros((4, 8, 8), np.uint8), y=np.arange(4))
    png = io.BytesIO()
    from PIL import Image
    Image.new("L", (8, 8), 7).save(png, format="PNG")
    save_state(folder / "good.safetensors", {"w": torch.arange(64.0)})
    good_state = (folder / "good.safetensors").read_bytes()

    p: dict[str, Path] = {
        "idx-zero-byte": put("zero-idx3-ubyte", b""),
        "idx-truncated": put("short-idx3-ubyte", idx[:-30]),
        "idx-trailing": put("long-idx3-ubyte", idx + b"\0" * 7),
        "idx-wrong-magic": put("labels-as-images", _idx((10,), bytes(10))),
        "idx-not-idx": put("png-as-idx", png.getvalue()),
        "idx-header-cut": put("header-cut", idx[:9]),
        "idx-gzip-cut": put("cut.gz", gzip.compress(idx)[:-6]),  # the CRC and size trailer cut
        "mat-zero-byte": put("zero.mat", b""),
        "mat-truncated": put("cut.mat", mat.getvalue()[:3000]),
        "mat-text": put("text.mat", b"MATLAB? no, plain text\n" * 10),
        "mat-wrong-shape": put("shape.mat", bad_mat.getvalue()),
        "tar-zero-byte": put("zero.tar.gz", b""),
        "tar-truncated": put("cut.tar.gz", tar(3073)[:100]),
        "tar-not-tar": put("text.tar.gz", b"not a tarball" * 50),
        "tar-missing-member": put("missing.tar.gz", tar(3073)),
        "tar-record-length": put("records.tar.gz", tar(3072)),
        "npz-zero-byte": put("zero.npz", b""),
        "npz-truncated": put("cut.npz", npz.getvalue()[:200]),
        "image-zero-byte": put("img/zero.png", b""),
        "image-truncated": put("img/cut.png", png.getvalue()[:40]),
        "image-text": put("img/text.jpg", b"just text"),
        "folder-damaged": put("folder/cls/cut.png", png.getvalue()[:40]),
        "state-zero-byte": put("zero.safetensors", b""),
        "state-truncated": put("cut.safetensors", good_state[:-20]),
        "state-bit-flip": put("flip.safetensors", good_state[:-9] + bytes([good_state[-9] ^ 1]) + good_state[-8:]),
        "weights-pickle": put("model.safetensors", pickle.dumps({"w": [1, 2]})),
        **{f"mnist-{i}": put(f"data/mnist/{name}", b"") for i, name in enumerate(
            ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"])},
    }
    expected_idx = "expected IDX magic 0x00000803 (uint8 images)"
    return [
        ("idx-zero-byte", lambda: formats.read_idx(p["idx-zero-byte"], ndim=3), p["idx-zero-byte"], ("expected an IDX file, found only 0 bytes",)),
        ("idx-truncated", lambda: formats.read_idx(p["idx-truncated"], ndim=3), p["idx-truncated"], ("declares 10x4x4 uint8 (160 bytes of data), found 130",)),
        ("idx-trailing", lambda: formats.read_idx(p["idx-trailing"], ndim=3), p["idx-trailing"], ("declares 10x4x4", "found 161")),
        ("idx-wrong-magic", lambda: formats.read_idx(p["idx-wrong-magic"], ndim=3), p["idx-wrong-magic"], (expected_idx, "found 0x00000801")),
        ("idx-not-idx", lambda: formats.read_idx(p["idx-not-idx"], ndim=3), p["idx-not-idx"], (expected_idx, "found 0x89504e47")),
        ("idx-header-cut", lambda: formats.read_idx(p["idx-header-cut"], ndim=3), p["idx-header-cut"], ("IDX header truncated: expected 16 bytes",)),
        ("idx-gzip-cut", lambda: formats.read_idx(p["idx-gzip-cut"], ndim=3), p["idx-gzip-cut"], ("expected an IDX file (gzip or plain)",)),
        *[(case, lambda case=case: formats.read_svhn_mat(p[case]), p[case], ("expected a MATLAB v5 .mat file with X (32x32x3xN uint8)",))
          for case in ("mat-zero-byte", "mat-truncated", "mat-text")],
        ("mat-wrong-shape", lambda: formats.read_svhn_mat(p["mat-wrong-shape"]), p["mat-wrong-shape"], ("found X (28, 28, 3, 2) uint8",)),
        *[(case, lambda case=case: formats.read_cifar10_tar(p[case]), p[case], ("expected the CIFAR-10 binary tar.gz",))
          for case in ("tar-zero-byte", "tar-truncated", "tar-not-tar")],
        ("tar-missing-member", lambda: formats.read_cifar10_tar(p["tar-missing-member"]), p["tar-missing-member"], ("expected member cifar-10-batches-bin/data_batch_2.bin",)),
        ("tar-record-length", lambda: formats.read_cifar10_tar(p["tar-record-length"]), p["tar-record-length"], ("data_batch_1.bin: expected records of 3073 bytes", "found 6144 bytes")),
        *[(case, lambda case=case: formats.read_npz(p[case]), p[case], ("expected an .npz archive",))
          for case in ("npz-zero-byte", "npz-truncated")],
        *[(case, lambda case=case: read_image(p[case], (1, 8, 8), 16.0), p[case], ("expected an image file: not a readable image",))
          for case in ("image-zero-byte", "image-truncated", "image-text")],
        ("folder-damaged", lambda: formats.read_image_folder(folder / "folder", size=8, channels=1), p["folder-damaged"], ("expected a PNG/JPEG image: not a readable image",)),
        *[(case, lambda case=case: load_state(p[case]), p[case], ("expected a safetensors file",))
          for case in ("state-zero-byte", "state-truncated")],
        ("state-bit-flip", lambda: load_state(p["state-bit-flip"]), p["state-bit-flip"], ("damaged: its tensors do not match the checksum",)),
        ("weights-pickle", lambda: load_weights(p["weights-pickle"]), p["weights-pickle"], ("expected a safetensors file",)),
        ("mnist-zero-byte", lambda: tv.load_dataset("mnist", data_dir=folder / "data"), p["mnist-0"],
         ("checksum mismatch: expected md5 f68b3c2dcbeaaa9fbdd348bbdeb94873",)),
    ]


def check_corrupt_inputs(folder: Path) -> int:
    """Every damaged file gives one DataError line naming it and what was expected. Explicit raises,
    not asserts: this also runs under `python -O`. Returns the number of cases."""
    from tinyvision.errors import DataError

    cases = corrupt_files(folder)
    for case, parse, path, needles in cases:
        try:
            parse()
        except DataError as exc:
            text = str(exc)
            if "\n" in text or not text.startswith(f"{path}: ") or not all(n in text for n in needles):
                raise AssertionError(f"{case}: {text!r} should be one line naming {path} and saying {needles}")
        else:
            raise AssertionError(f"{case}: {path} was accepted")
    return len(cases)


def test_corrupt_inputs_give_one_line_naming_the_file(tmp_path) -> None:
    assert check_corrupt_inputs(tmp_path) >= 25


@pytest.mark.slow
def test_corrupt_inputs_under_python_O(tmp_path) -> None:
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]); import test_reliability as t; "
            "print(sys.flags.optimize, t.check_corrupt_inputs(Path(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-O", "-c", code, str(tmp_path), str(REPO / "tests")], env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    optimize, cases = map(int, done.stdout.split())
    assert optimize == 1 and cases >= 25
    # and through the CLI: one line, exit 1, under -O too
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    cli = subprocess.run([sys.executable, "-O", "-m", "tinyvision.cli", "train", "--dataset", f"npz:{tmp_path / 'bad.npz'}",
                          "threads=1"], env=env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1
    one_error_line(cli.stderr, f"{tmp_path / 'bad.npz'}: expected an .npz archive")


@pytest.mark.slow
def test_property_tests_under_python_O_with_bounded_memory(tmp_path) -> None:
    """tests/test_properties.py again, under `python -O` and a 512 MiB address-space cap."""
    done = subprocess.run([sys.executable, "-O", "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-W", "ignore",
                           str(REPO / "tests" / "test_properties.py")], cwd=tmp_path, capture_output=True, text=True,
                          # one OpenMP thread pool and two malloc arenas: each extra thread or arena
                          # reserves address space, which under the 512 MiB cap varies with the core count
                          env={**env(), "TINYVISION_TEST_MEMORY_MB": "512", "TINYVISION_TEST_EXAMPLES": "40",
                               "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"},
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "python -O: 1" in done.stdout and " passed" in done.stdout and "skipped" not in done.stdout
    print("\n" + next(line for line in done.stdout.splitlines() if "malformed inputs tried" in line))


def test_no_bare_asserts_in_the_package() -> None:
    import ast

    for path in (REPO / "tinyvision").rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert not [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)], path


# --- configs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,field", [
    (["lrr=0.1"], "lrr"), (["epochs=abc"], "epochs"), (["lr=-1"], "lr"), (["dropout=1.5"], "dropout"),
    (["batch_size=0"], "batch_size"), (["optimizer=sgdd"], "optimizer"), (["--epochs", "0"], "epochs"),
    (["augment=yes"], "augment"), (["threads=0"], "threads"), (["val_size=1.5"], "val_size"),
    (["seed=-1"], "seed"), (["deterministic=maybe"], "deterministic"),
    (["epochs=true"], "epochs"), (["lr=false"], "lr"), (["recipe=mnist-fastt"], "recipe"),
    (["precision=fp16"], "precision"),
])
def test_bad_config_values_exit_2_naming_the_field(capsys, args, field) -> None:
    rc = main(["train", "--dataset", "digits", *args])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    one_error_line(err, f"'{field}'")


def test_bad_config_file_exits_2_in_a_real_process(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("dataset: digits\nepochs: 2\nlearning_rate: 0.1\n")
    done = run_cli(tmp_path, "train", "--config", "c.yaml")
    assert done.returncode == 2
    one_error_line(done.stderr, "unknown config field 'learning_rate'")


# --- determinism ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_same_seed_same_weights_in_fresh_processes_and_deterministic_mode(tmp_path) -> None:
    args = ["train", "--dataset", "digits", "--model", "digits-cnn", "--epochs", "2", "--seed", "11",
            "dropout=0.3", "augment=flip-translate", "threads=1", "--quiet", "--no-report"]
    procs = [start_cli(tmp_path, *args, "--run-dir", f"r{i}", log=f"r{i}") for i in range(2)]
    code = ("import json, os, sys, torch, tinyvision as tv; "
            "r = tv.train(dict(dataset='digits', model='digits-cnn', epochs=1, seed=11, threads=1, "
            "deterministic=True), run_dir=sys.argv[1], quiet=True); "
            "print(json.dumps([torch.are_deterministic_algorithms_enabled(), "
            "os.environ.get('CUBLAS_WORKSPACE_CONFIG'), r['deterministic'], r['status']]))")
    det = subprocess.run([sys.executable, "-c", code, str(tmp_path / "det")], env=env(), capture_output=True,
                         text=True, timeout=180)
    assert det.returncode == 0, det.stderr[-2000:]
    assert json.loads(det.stdout) == [True, ":4096:8", True, "completed"]
    assert runs.read_result(tmp_path / "det")["deterministic"] is True
    for i, proc in enumerate(procs):
        assert proc.wait(timeout=180) == 0, (tmp_path / f"r{i}.err").read_text()
    first, second = (load_weights(tmp_path / f"r{i}" / runs.WEIGHTS)[0] for i in range(2))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert metrics_text(tmp_path / "r0") == metrics_text(tmp_path / "r1")
    assert runs.read_result(tmp_path / "r0")["deterministic"] is False


def test_written_files_follow_the_umask_not_0600(tmp_path) -> None:
    from tinyvision.files import atomic_write

    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640  # group may read a shared run


@pytest.mark.parametrize("spec", ["mlp: 6", "mlp 16", "lp:16", "cnn:0"])
def test_a_damaged_spec_in_a_weights_file_is_a_one_line_error_naming_it(tmp_path, spec) -> None:
    from tinyvision.files import load_weights, save_weights
    from tinyvision.errors import DataError
    from tinyvision.inference import load_model

    model = tv.models.create_model("mlp:16", (1, 8, 8), 10)
    meta = {"spec": spec, "input_shape": [1, 8, 8], "num_classes": 10, "classes": [str(i) for i in range(10)],
            "mean": [0.0], "std": [1.0]}
    save_weights(tmp_path / "w.safetensors", model.state_dict(), meta)
    assert load_weights(tmp_path / "w.safetensors")[1]["spec"] == spec
    with pytest.raises(DataError, match=f"^{tmp_path / 'w.safetensors'}: its metadata names a model") as info:
        load_model(tmp_path / "w.safetensors")
    assert "\n" not in str(info.value)
