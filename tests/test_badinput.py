"""Every bad input gets one line; no silent surprises.

Each former traceback, silent acceptance or unbounded message is driven through the real CLI
(`tinyvision.cli.main` in-process, or a subprocess where a real process matters: a memory cap, a
signal) and must end as one short stderr line with its exit code: 2 for configuration, 1 for files.
"""
from __future__ import annotations

import csv
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinyvision.cli import main

REPO = Path(__file__).resolve().parents[1]


# --- helpers -----------------------------------------------------------------------------------

def cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """`tinyvision ARGS` in-process: (exit code, stdout, stderr); argparse exits count too."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *needles: str, code: int, limit: int = 300) -> str:
    """Exit `code`, exactly one short stderr line without a traceback, holding every needle."""
    assert rc == code, err
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err[:500]!r}"
    assert "Traceback" not in err and len(err) < limit, err[:500]
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


def env_for(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TINYVISION_OFFLINE": "1", "TINYVISION_DATA": str(tmp_path / "cache"),
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",  # per-thread buffers: address space
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Nested anchors, then `epochs: *i`: 9**9 (387 million) strings once expanded."""
    names = "abcdefghijklmnop"
    lines = ["a: &a [" + ", ".join(['"xxxxxxxxxx"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"{names[i]}: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * width) + "]")
    lines.append(f"epochs: *{names[levels - 1]}")
    return "\n".join(lines) + "\n"


def write_pngs(folder: Path, count: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)) + count)
    paths = []
    for i in range(count):
        channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
        pixels = rng.integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8)
        path = folder / f"img{i:02d}.png"
        Image.fromarray(pixels, mode=mode).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 1-epoch digits MLP run, shared read-only (copy it to change it)."""
    out = tmp_path_factory.mktemp("badinput-run")
    assert main(["train", "--dataset", "digits", "--model", "mlp:16", "--epochs", "1", "threads=1",
                 "--out", str(out), "--quiet", "--no-report"]) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


@pytest.fixture
def run_copy(small_run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(small_run, tmp_path / small_run.name))


# --- 1. YAML: alias bombs and long values -------------------------------------------------------

def _capped(cap: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


@pytest.mark.slow
def test_alias_bomb_config_file_is_one_line_fast_in_bounded_memory(tmp_path):
    # `tinyvision train --help` (torch imported) needs ~0.8 GiB of address space with one BLAS
    # thread; 2 GiB leaves room for it and is a quarter of the 8.4 GB the bomb used to take.
    cap = 2 << 30
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "tinyvision.cli", *map(str, args)], cwd=tmp_path, env=env_for(tmp_path),
        capture_output=True, text=True, timeout=120, preexec_fn=lambda: _capped(cap))
    helped = run("train", "--help")
    assert helped.returncode == 0, f"the cap is too low for the CLI itself: {helped.stderr[-300:]}"
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    start = time.monotonic()
    proc = run("train", "--config", bomb, "--out", tmp_path / "runs")
    seconds = time.monotonic() - start
    assert seconds < 30, seconds
    assert proc.stdout == ""
    one_line_error(proc.returncode, proc.stderr, str(bomb), "line 10", "aliases", code=2)
    assert not (tmp_path / "runs").exists()


def test_alias_bomb_in_an_override_and_long_values_are_cut(capsys, tmp_path):
    # an override whose YAML would expand is kept as the text typed, and that text is cut
    bomb = "[" + ", ".join(["&a [" + ", ".join(["1"] * 100) + "]"] + ["[" + ", ".join(["*a"] * 100) + "]"] * 100) + "]"
    rc, _, err = cli(capsys, "train", f"epochs={bomb}", "--out", tmp_path)
    one_line_error(rc, err, "'epochs'", "characters", code=2)
    long_value = tmp_path / "long.yaml"
    long_value.write_text(f"batch_size: {'x' * 500_000}\n")
    rc, _, err = cli(capsys, "train", "--config", long_value, "--out", tmp_path)
    one_line_error(rc, err, "'batch_size'", "500,000 characters", code=2)
    long_key = tmp_path / "key.yaml"
    long_key.write_text(f"? {'k' * 100_000}\n: 1\n")  # an explicit key: implicit ones stop at 1024
    rc, _, err = cli(capsys, "train", "--config", long_key, "--out", tmp_path)
    one_line_error(rc, err, "unknown config field", "100,000 characters", code=2, limit=1000)
    rc, _, err = cli(capsys, "train", f"model=cnn:{'1' * 10_000}", "--out", tmp_path)
    one_line_error(rc, err, "model spec", "too large", code=2)
    assert list(tmp_path.glob("*/config.yaml")) == []


def test_override_yaml_values_keep_their_types():
    from tinyvision.config import parse_override

    assert parse_override("lr=0.01") == ("lr", 0.01)
    assert parse_override("model=cnn:16-32/k3") == ("model", "cnn:16-32/k3")  # a YAML mapping: the text
    assert parse_override("epochs=[1, 2") == ("epochs", "[1, 2")  # a parse error: the text
    assert parse_override("tta=true") == ("tta", True)


# --- 2. former tracebacks ------------------------------------------------------------------------

@pytest.mark.parametrize("top", ["0", "-1"])
def test_predict_top_below_one_is_a_usage_error(capsys, tmp_path, small_run, top):
    write_pngs(tmp_path / "pngs", 1)
    rc, out, err = cli(capsys, "predict", small_run, tmp_path / "pngs", "--top", top)
    assert out == ""
    one_line_error(rc, err, "--top", "must be >= 1", code=2)


def test_predict_top_above_the_class_count_is_capped_with_a_note(capsys, tmp_path, small_run):
    write_pngs(tmp_path / "pngs", 2)
    rc, out, err = cli(capsys, "predict", small_run, tmp_path / "pngs", "--top", "50")
    assert rc == 0 and err.count("\n") == 1 and "the model has 10 classes; showing 10" in err
    for line in out.splitlines():
        assert len(line.split("\t")) == 1 + 2 * 10


def test_predict_top_is_checked_from_python_too(small_run, tmp_path):
    from tinyvision.errors import ConfigError
    from tinyvision.inference import load_model, predict_files

    write_pngs(tmp_path / "pngs", 1)
    with pytest.raises(ConfigError, match="top must be"):
        predict_files(load_model(small_run), [tmp_path / "pngs"], top=0)


@pytest.mark.parametrize("spec", ["mlp:99999999999", "cnn:4096-4096-4096/k15/nopool/fc99999999"])
def test_model_too_large_is_refused_before_allocating(capsys, tmp_path, spec):
    rc, out, err = cli(capsys, "train", "--model", spec, "--epochs", "1", "--out", tmp_path)
    one_line_error(rc, err, f"model spec '{spec}'", "parameters", "TB of float32", "the limit is", code=2)
    rc, out, err = cli(capsys, "summary", spec)
    one_line_error(rc, err, "parameters", code=2)
    assert list(tmp_path.iterdir()) == []


def test_parameter_count_by_arithmetic_matches_the_built_model():
    from tinyvision.models import MODELS, count_parameters, create_model, resolve_spec
    from tinyvision.models.build import count_spec_parameters

    specs = [(resolve_spec(n), MODELS.get(n).input_shape) for n in MODELS.names()]
    specs += [(resolve_spec(s), (3, 20, 20)) for s in ("cnn:8-16/k5/bn/fc32-16/drop0.2", "mlp:30-20/bn",
                                                       "mlp:linear", "cnn:4/nopool/k3/p0", "cnn:4-8/avg/pool3/gelu")]
    for spec, shape in specs:
        assert count_spec_parameters(spec, shape, 7) == count_parameters(create_model(spec, shape, 7)), spec


def test_parameter_limit_says_which_limit_applies(monkeypatch):
    from tinyvision.models import build

    limit, why = build.parameter_limit()
    assert 0 < limit <= build.MAX_PARAMETERS and ("fixed cap" in why or "of this machine's" in why)
    monkeypatch.setattr(build, "MAX_PARAMETERS", 1000)
    assert build.parameter_limit() == (1000, "1e+03 parameters (4.0 kB of float32; a fixed cap)")
    with pytest.raises(build.SpecError, match="the limit is 1e"):
        build.build_model("mlp:100", (1, 8, 8), 10)  # 7,510 parameters


def test_binary_file_and_directory_as_config(capsys, tmp_path):
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    rc, out, err = cli(capsys, "train", "--config", binary, "--out", tmp_path / "runs")
    one_line_error(rc, err, str(binary), "not a text file", code=2)
    rc, out, err = cli(capsys, "train", "--config", tmp_path, "--out", tmp_path / "runs")
    one_line_error(rc, err, str(tmp_path), "is a directory", code=2)
    rc, out, err = cli(capsys, "train", "--config", tmp_path / "missing.yaml", "--out", tmp_path / "runs")
    one_line_error(rc, err, "does not exist", code=2)
    assert not (tmp_path / "runs").exists()


# --- 3. duplicate keys in every YAML file ----------------------------------------------------------

def test_duplicate_keys_are_named_with_their_line(capsys, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("dataset: digits\nepochs: 3\nlr: 0.01\nepochs: 30\n")
    rc, _, err = cli(capsys, "train", "--config", config, "--out", tmp_path / "runs")
    one_line_error(rc, err, str(config), "line 4", "duplicate key 'epochs'", "first on line 2", code=2)

    experiment = tmp_path / "sweep.yaml"
    experiment.write_text("base: {dataset: digits, epochs: 1}\ngrid:\n  lr: [0.1, 0.01]\n  lr: [0.5]\n")
    rc, _, err = cli(capsys, "run", experiment, "--out", tmp_path / "runs")
    one_line_error(rc, err, str(experiment), "line 4", "duplicate key 'lr'", code=2)

    tune = tmp_path / "tune.yaml"
    tune.write_text("base: {dataset: digits, epochs: 1}\nsearch:\n  lr: {low: 0.001, high: 0.1}\n"
                    "trials: 2\ntrials: 3\n")
    rc, _, err = cli(capsys, "tune", tune, "--out", tmp_path / "runs")
    one_line_error(rc, err, str(tune), "line 5", "duplicate key 'trials'", code=2)
    assert not (tmp_path / "runs").exists()


# --- 4. folder datasets say what they found ----------------------------------------------------------

def _folder(root: Path) -> Path:
    write_pngs(root / "cat", 6, size=(12, 10), mode="RGB")
    write_pngs(root / "dog", 5, size=(32, 32), mode="RGBA")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1")  # hidden: left out silently
    return root


def test_folder_dataset_summary_and_warnings_on_stderr(capsys, tmp_path):
    root = _folder(tmp_path / "pets")
    rc, out, err = cli(capsys, "train", "--dataset", f"folder:{root}", "--model", "mlp:8", "--epochs", "1",
                       "threads=1", "--quiet", "--no-report", "--out", tmp_path / "runs")
    assert rc == 0, err
    info, warning = err.splitlines()
    assert info.startswith(f"tinyvision: folder:{root}: 2 classes (cat 6, dog 5 images)")
    assert "train 8 / val 1 / test 2 (test: 20% held out)" in info
    assert "input 3x32x32: 6 of 11 images resized to 32x32, 5 converted to RGB" in info
    assert "(defaults; set image_size/channels to change)" in info
    assert warning.startswith("tinyvision: warning: ") and "dog/notes.txt" in warning
    assert ".DS_Store" not in err


def test_folder_dataset_is_quiet_from_python_but_for_warnings(capsys, caplog, tmp_path):
    import logging

    from tinyvision.data import load_dataset

    root = _folder(tmp_path / "pets")
    with caplog.at_level(logging.INFO, logger="tinyvision"):
        data = load_dataset(f"folder:{root}", image_size=16, channels=1)
    assert data.input_shape == (1, 16, 16) and data.classes == ("cat", "dog")
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages[0][0] == "INFO" and "(as configured)" in messages[0][1]
    assert messages[1][0] == "WARNING" and "dog/notes.txt" in messages[1][1]


def test_unreadable_images_and_empty_classes_in_one_error(capsys, tmp_path):
    root = _folder(tmp_path / "pets")
    (root / "cat" / "broken.png").write_bytes(b"not a png at all" * 8)
    (root / "dog" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 nothing more")
    (root / "bird").mkdir()
    (root / "bird" / "readme.md").write_text("no pictures yet")
    args = ["train", "--dataset", f"folder:{root}", "--model", "mlp:8", "--epochs", "1", "threads=1",
            "--quiet", "--no-report", "--out", tmp_path / "runs"]
    rc, out, err = cli(capsys, *args)
    one_line_error(rc, err, "2 unreadable images", "cat/broken.png", "dog/truncated.jpg",
                   "1 class folder without a readable image (bird/", "skip_bad_images: true", code=1, limit=1000)
    assert "object at 0x" not in err and "BytesIO" not in err

    rc, out, err = cli(capsys, *args, "skip_bad_images=true")
    assert rc == 0, err
    lines = err.splitlines()
    assert "2 classes (cat 6, dog 5 images)" in lines[0]
    skipped = [line for line in lines if "skip_bad_images left out" in line]
    assert len(skipped) == 1 and "cat/broken.png" in skipped[0] and "bird/" in skipped[0]


def test_a_class_of_unreadable_images_is_named_once(capsys, tmp_path):
    from tinyvision.data import load_dataset
    from tinyvision.data.formats import read_image_folder
    from tinyvision.errors import DataError

    root = _folder(tmp_path / "pets")
    (root / "fish").mkdir()
    (root / "fish" / "a.png").write_bytes(b"")
    with pytest.raises(DataError) as info:
        read_image_folder(root, size=8, channels=1)
    assert str(info.value).startswith(f"{root / 'fish' / 'a.png'}: expected a PNG/JPEG image: not a readable")
    assert "class folder" not in str(info.value)
    data = load_dataset(f"folder:{root}", skip_bad_images=True)
    assert data.classes == ("cat", "dog")


def test_skip_bad_images_is_a_config_field_for_folders_only(capsys, tmp_path):
    from tinyvision.config import RunConfig

    assert "skip" in RunConfig.model_fields["skip_bad_images"].description
    rc, _, err = cli(capsys, "train", "skip_bad_images=true", "--epochs", "1", "--out", tmp_path)
    one_line_error(rc, err, "skip_bad_images applies only to folder: datasets", code=2)


# --- 5. predict: every file on the terminal, a bad one among good ones ----------------------------

def test_predict_top_n_on_the_terminal(capsys, tmp_path, small_run):
    paths = write_pngs(tmp_path / "pngs", 3)
    rc, out, err = cli(capsys, "predict", small_run, tmp_path / "pngs", "--top", "3")
    assert rc == 0 and err == ""
    lines = [line.split("\t") for line in out.splitlines()]
    assert [cells[0] for cells in lines] == list(map(str, paths))
    for cells in lines:
        probs = [float(p) for p in cells[2::2]]
        assert len(cells) == 7 and probs == sorted(probs, reverse=True) and len(set(cells[1::2])) == 3


def test_predict_a_bad_file_among_good_ones(capsys, tmp_path, small_run):
    paths = write_pngs(tmp_path / "pngs", 2)
    bad = tmp_path / "pngs" / "img00b.png"
    bad.write_bytes(b"garbage" * 10)
    out_csv = tmp_path / "p.csv"
    rc, out, err = cli(capsys, "predict", small_run, tmp_path / "pngs", "--csv", out_csv)
    assert rc == 1
    assert [line.split("\t")[0] for line in out.splitlines()] == list(map(str, paths))
    one_line_error(rc, err, str(bad), "not a readable image", code=1)
    assert "object at 0x" not in err
    with out_csv.open(newline="") as f:
        assert [r["path"] for r in csv.DictReader(f)] == list(map(str, paths))


def test_predict_help_says_what_happens_to_bad_files(capsys):
    rc, out, _ = cli(capsys, "predict", "--help")
    assert rc == 0 and "others are still classified" in " ".join(out.split())


# --- 6. overrides are never ignored ---------------------------------------------------------------

def test_an_override_replaced_by_a_flag_is_still_validated(capsys, tmp_path):
    rc, _, err = cli(capsys, "train", "--epochs", "1", "epochs=abc", "--out", tmp_path)
    one_line_error(rc, err, "'epochs'", "'abc'", code=2)
    config = tmp_path / "c.yaml"
    config.write_text("lr: -1\n")
    rc, _, err = cli(capsys, "train", "--config", config, "--lr", "0.1", "--out", tmp_path)
    one_line_error(rc, err, "'lr'", code=2)
    rc, _, err = cli(capsys, "train", "batch_size=0", "batch_size=8", "--out", tmp_path)
    one_line_error(rc, err, "'batch_size'", code=2)
    assert list(tmp_path.glob("*/config.yaml")) == []


def test_combinations_are_judged_on_the_final_values():
    from tinyvision.config import load_config

    cfg = load_config(None, ["nesterov=true", "momentum=0.9"], optimizer="sgd")  # adam + nesterov alone is invalid
    assert cfg.nesterov and cfg.optimizer == "sgd"


def test_resume_may_add_epochs_and_refuses_other_changes(capsys, run_copy):
    import yaml as pyyaml

    saved = (run_copy / "config.yaml").read_text()
    rc, _, err = cli(capsys, "train", "--resume", run_copy, "lr=0.5", "--epochs", "3")
    one_line_error(rc, err, "cannot change lr 0.001 -> 0.5", "start a new run", code=2, limit=500)
    rc, _, err = cli(capsys, "train", "--resume", run_copy, "epochs=abc")
    one_line_error(rc, err, "'epochs'", code=2)
    assert (run_copy / "config.yaml").read_text() == saved

    rc, out, err = cli(capsys, "train", "--resume", run_copy, "epochs=2", "--quiet", "--no-report")
    assert rc == 0, err
    assert pyyaml.safe_load((run_copy / "config.yaml").read_text())["epochs"] == 2
    assert len((run_copy / "metrics.csv").read_text().splitlines()) == 1 + 2
    rc, _, err = cli(capsys, "train", "--resume", run_copy, "epochs=1")
    one_line_error(rc, err, "cannot change epochs 2 -> 1", "only grow", code=2, limit=500)


def test_resume_refuses_more_epochs_for_a_schedule_fixed_to_them():
    from tinyvision.config import RunConfig
    from tinyvision.config_resume import resume_config
    from tinyvision.errors import ConfigError

    onecycle = RunConfig(schedule="onecycle", epochs=5)
    with pytest.raises(ConfigError, match="schedule onecycle is fixed to 5 epochs"):
        resume_config(onecycle, {"epochs": 10})
    assert resume_config(onecycle, {"epochs": 5, "threads": 2}).threads == 2
    assert resume_config(RunConfig(schedule="step"), {"epochs": 50}).epochs == 50


# --- 7. report: a file it needs is unreadable -------------------------------------------------------

@pytest.mark.slow
def test_report_needs_its_files_unless_partial(capsys, run_copy):
    (run_copy / "model.safetensors").write_bytes(b"damaged")  # reports do not read the model
    rc, out, err = cli(capsys, "report", run_copy)
    assert rc == 0 and err == "", err

    (run_copy / "predictions.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"{not json")
    rc, out, err = cli(capsys, "report", run_copy)
    one_line_error(rc, err, "report.html written without its prediction grids", "predictions.safetensors",
                   "--partial", code=1, limit=600)
    assert (run_copy / "report.html").exists()
    rc, out, err = cli(capsys, "report", run_copy, "--partial")
    assert rc == 0 and err.count("\n") == 1 and err.startswith("tinyvision: warning: ")
    assert "predictions.safetensors" in err


@pytest.mark.slow
def test_report_with_damaged_metrics(capsys, run_copy):
    (run_copy / "metrics.csv").write_bytes(b"epoch,train_loss\n1,\xff\xfe\n")
    rc, _, err = cli(capsys, "report", run_copy)
    one_line_error(rc, err, "learning curves", "metrics.csv", code=1, limit=600)
    rc, _, err = cli(capsys, "report", run_copy, "--partial")
    assert rc == 0 and err.count("\n") == 1 and "metrics.csv" in err


# --- 8. the Python API writes no report ----------------------------------------------------------

@pytest.mark.slow
def test_python_train_writes_no_report_and_write_report_does(tmp_path):
    import tinyvision as tv
    from tinyvision.pipeline import train
    from tinyvision.report import write_report

    assert "write_report(result[\"run_dir\"])" in " ".join(train.__doc__.split())
    result = tv.train({"dataset": "digits", "model": "mlp:8", "epochs": 1, "threads": 1}, out=tmp_path,
                      quiet=True)
    run_dir = Path(result["run_dir"])
    assert not (run_dir / "report.html").exists()
    html, md = write_report(result["run_dir"])
    assert html == run_dir / "report.html" and html.exists() and (run_dir / "plots").is_dir()


# --- 9. discoverability ----------------------------------------------------------------------------

def test_models_matches_a_plain_word_anywhere(capsys):
    from tinyvision.models import list_models

    rc, out, _ = cli(capsys, "models", "cnn")
    names = {line.split()[0] for line in out.splitlines()[2:]}
    assert rc == 0 and names == {"cnn-small", "cnn-tiny", "digits-cnn", "svhn-cnn"}
    assert list_models("CNN") == sorted(names) and list_models("cnn-*") == ["cnn-small", "cnn-tiny"]


def test_trust_pickle_failure_does_not_advise_weights_only_false(capsys, tmp_path):
    import torch

    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2), "when": np.datetime64("2020-01-01")}, pt)  # not a weights-only pickle
    write_pngs(tmp_path / "pngs", 1)
    rc, _, err = cli(capsys, "predict", pt, tmp_path / "pngs", "--trust-pickle")
    one_line_error(rc, err, str(pt), "weights-only", code=1, limit=400)
    assert "False" not in err and "trust the source" not in err and "\x1b" not in err


@pytest.mark.slow
def test_interrupted_run_prints_the_resume_command(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinyvision.cli", "train", "--model", "mlp:8", "--epochs", "100000", "threads=1",
         "--quiet", "--out", "runs"], cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("runs/*/metrics.csv")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    (run_dir,) = tmp_path.glob("runs/*")
    assert proc.returncode == 130, err
    assert f"tinyvision train --resume runs/{run_dir.name}" in out, out
