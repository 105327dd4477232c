"""The `tinyvision` command end to end: every command's output, run directories, exit codes and
one-line errors. Most tests call `tinyvision.cli.main` in-process (fast); a few run the real
`python -m tinyvision.cli` to check the process exit code and that stderr holds no traceback."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tinyvision.cli import main

REPO = Path(__file__).resolve().parents[1]

METRICS_COLUMNS = ["epoch", "train_loss", "train_accuracy", "train_error", "lr", "seconds",
                   "val_loss", "val_accuracy", "val_error", "val_seconds", "best_epoch"]
# published md5 of the four MNIST files as served (the checksums a user can check a copy against)
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
DIGITS_TEST_START = 1350  # the digits dataset's fixed split: the last 447 of sklearn's 1797 images


# Training calls pass threads=1: these nets are tiny, and all-core OpenMP on a busy machine (other
# test processes) runs 5-10x slower than one thread.

# --- helpers -----------------------------------------------------------------------------------

def cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """Run `tinyvision ARGS` in-process: (exit code, stdout, stderr)."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, out: str, err: str, *needles: str, code: int | None = None) -> str:
    """A user error: non-zero exit, nothing on stdout, exactly one stderr line, no traceback."""
    assert rc != 0, f"expected a failure, got rc 0; stdout={out!r}"
    if code is not None:
        assert rc == code, err
    assert out == ""
    assert err.startswith("tinyvision: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, f"stderr is not one line: {err!r}"
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


def run_subprocess(tmp_path: Path, *args: object) -> subprocess.CompletedProcess:
    """`python -m tinyvision.cli ARGS` in a fresh process (offline, cache under tmp_path)."""
    env = {**os.environ, "TINYVISION_OFFLINE": "1", "TINYVISION_DATA": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "tinyvision.cli", *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def table_rows(text: str) -> dict[str, list[str]]:
    """A `tables.to_text` table -> {first cell: cells}, header and rule skipped."""
    lines = text.strip().splitlines()
    assert set(lines[1].replace(" ", "")) == {"-"}, "second line should be the rule under the header"
    return {cells[0]: cells for cells in (line.split() for line in lines[2:])}


def single_run_dir(out: Path) -> Path:
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder -> its bytes (to show that nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def digits_test_images() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits test images (the dataset's test split), values 0..16, and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images[DIGITS_TEST_START:], digits.target[DIGITS_TEST_START:]


def write_digit_pngs(folder: Path, count: int = 8) -> list[Path]:
    """8x8 grayscale PNGs of digits test images, scaled from 0..16 to 0..255."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images, labels = digits_test_images()
    paths = []
    for i in range(count):
        path = folder / f"digit{i:02d}_label{labels[i]}.png"
        Image.fromarray(np.round(images[i] * 255 / 16).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 2-epoch digits-cnn run, shared read-only (tests that could change it copy it).
    precision=fp32: "auto" would train this conv net in bf16 on CPUs with native bf16 (Zen 4) and in
    fp32 elsewhere, and evaluate/predict re-compute its numbers by other code paths."""
    out = tmp_path_factory.mktemp("digits-run")
    assert main(["train", "--dataset", "digits", "--epochs", "2", "threads=1", "precision=fp32", "--out", str(out),
                 "--quiet"]) == 0
    return single_run_dir(out)


@pytest.fixture
def run_copy(digits_run: Path, tmp_path: Path) -> Path:
    """A private copy of the digits run."""
    return Path(shutil.copytree(digits_run, tmp_path / digits_run.name))


# --- datasets / models / summary -----------------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert re.fullmatch(r"tinyvision \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_datasets_lists_every_dataset_with_sizes(capsys, tmp_path):
    rc, out, err = cli(capsys, "datasets", "--data-dir", tmp_path)
    assert rc == 0 and err == ""
    assert out.split()[:7] == ["dataset", "shape", "classes", "train", "val", "test", "files"]
    rows = table_rows(out)
    assert set(rows) >= {"digits", "mnist", "fashion-mnist", "svhn", "cifar10"}
    assert rows["digits"][1:] == ["1x8x8", "10", "1,000", "350", "447", "built-in"]
    assert rows["mnist"][1:] == ["1x28x28", "10", "55,000", "5,000", "10,000", "0/4"]  # empty data dir
    assert rows["fashion-mnist"][3:6] == ["55,000", "5,000", "10,000"]
    assert rows["svhn"][1] == "3x32x32" and rows["cifar10"][1] == "3x32x32"


def test_datasets_sees_files_present(capsys, shared_data):
    rc, out, _ = cli(capsys, "datasets", "--data-dir", shared_data)
    assert rc == 0
    assert table_rows(out)["mnist"][-1] == "4/4"


def test_models_lists_presets_with_parameter_counts(capsys):
    rc, out, err = cli(capsys, "models")
    assert rc == 0 and err == ""
    assert out.split()[:5] == ["model", "spec", "input", "params", "description"]
    rows = table_rows(out)
    expected = {"cnn-tiny": ("cnn:16-4/k3/same", "1x28x28", "2,710"),
                "lenet": ("cnn:20-50/k5/p0/fc500", "1x28x28", "431,080"),
                "digits-mlp": ("mlp:128-64-64-32", "1x8x8", "23,146"),
                "digits-cnn": ("cnn:32-64/k3/bn/fc128/drop0.3", "1x8x8", "53,194"),
                "mlp-40-40": ("mlp:40-40", "1x28x28", "33,450")}
    for name, cells in expected.items():
        assert tuple(rows[name][1:4]) == cells, rows[name]
    assert {"cnn-small", "mlp-300-sigmoid", "mlp-456-128", "svhn-cnn"} <= set(rows)


def test_models_pattern_filter(capsys):
    rc, out, _ = cli(capsys, "models", "mlp*")
    assert rc == 0
    rows = table_rows(out)
    assert set(rows) == {"mlp-300-sigmoid", "mlp-40-40", "mlp-456-128"}
    assert rows["mlp-40-40"][3] == "33,450"


def test_summary_cnn_tiny(capsys):
    rc, out, err = cli(capsys, "summary", "cnn-tiny")
    assert rc == 0 and err == ""
    lines = out.strip().splitlines()
    assert lines[0].split() == ["layer", "kind", "output", "params", "MACs"]
    rows = {line.split()[0]: line.split() for line in lines if line.strip() and not set(line) <= {"-"}}
    assert rows["conv1"] == ["conv1", "Conv2d", "16x28x28", "160", "112,896"]
    assert rows["pool1"][1:4] == ["MaxPool2d", "16x14x14", "0"]
    assert rows["conv2"][1:4] == ["Conv2d", "4x14x14", "580"]
    assert rows["flatten"][2] == "196"
    assert rows["head"][1:4] == ["Linear", "10", "1,970"]
    assert lines[-1].split() == ["total", "1x28x28", "in", "2,710", "227,752"]


def test_summary_with_dataset_shape(capsys):
    rc, out, _ = cli(capsys, "summary", "digits-cnn", "--dataset", "digits")
    assert rc == 0
    lines = out.strip().splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:-2]}
    assert rows["conv1"][1:4] == ["Conv2d", "32x8x8", "320"]
    assert rows["bn1"][1:4] == ["BatchNorm2d", "32x8x8", "64"]
    assert rows["conv2"][1:4] == ["Conv2d", "64x4x4", "18,496"]
    assert rows["flatten"][2] == "256"
    assert rows["head"][1:4] == ["Linear", "10", "1,290"]
    assert lines[-1].split()[:5] == ["total", "1x8x8", "in", "53,194", "347,392"]


def test_summary_of_a_spec(capsys):
    rc, out, _ = cli(capsys, "summary", "mlp:40")  # a spec, not a preset: default 1x28x28 input
    assert rc == 0
    # 784*40+40 = 31,400; 40*10+10 = 410
    assert out.strip().splitlines()[-1].split()[:4] == ["total", "1x28x28", "in", "31,810"]


# --- help, config fields, recipes ----------------------------------------------------------------

def help_text(capsys: pytest.CaptureFixture, *args: str) -> str:
    """stdout of an option that prints and exits 0 (--help, --help-config)."""
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def test_train_help_shows_the_real_defaults(capsys):
    from tinyvision.cli.common import RUN_FLAGS
    from tinyvision.config import RunConfig

    out = " ".join(help_text(capsys, "train", "--help").split())  # argparse's line wrapping undone
    assert "(default: from config)" not in out
    flags = dict(re.findall(r"(--[a-z-]+) [A-Z_]+ (.*?)(?= --|$)", out))  # flag -> its help
    assert flags["--lr"] == "learning rate (default: 0.001)"
    assert flags["--optimizer"] == "optimiser: sgd, adam, adamw, adamax, adadelta (default: adam)"
    for name in ["model", *RUN_FLAGS]:
        default = RunConfig.model_fields[name].default
        assert flags["--" + name.replace("_", "-")].endswith(f"(default: {default})"), name


@pytest.mark.parametrize("command", ["train", "compare", "run", "lr-find"])
def test_help_config_lists_every_config_field(capsys, command):
    from tinyvision.config import RunConfig

    lines = help_text(capsys, command, "--help-config").splitlines()  # no model or file needed
    assert lines[0].split() == ["section", "field", "type", "default", "description"]
    body = [line.split() for line in lines[2:]]
    sections = [cells[0] for line, cells in zip(lines[2:], body) if not line.startswith(" ")]
    fields = [cells[0] if line.startswith(" ") else cells[1] for line, cells in zip(lines[2:], body)]
    assert fields == list(RunConfig.model_fields)  # one line each, in config.py's order
    assert sections == ["recipe", "data", "model", "optimisation", "execution"]
    lr = " ".join(lines[2 + fields.index("lr")].split())
    assert lr == "lr float in (0, 10] 0.001 learning rate"  # type with bounds, default, description


def test_recipes_lists_the_registered_recipes(capsys):
    from tinyvision.recipes import RECIPES

    rc, out, err = cli(capsys, "recipes")
    assert rc == 0 and err == ""
    for name in RECIPES:
        recipe = RECIPES.get(name)
        assert f"{name}: {recipe.description}" in out
    fast = out.splitlines()[out.splitlines().index(f"mnist-fast: {RECIPES.get('mnist-fast').description}") + 1]
    assert "dataset=mnist" in fast.split() and "epochs=1" in fast.split()
    rc, out, _ = cli(capsys, "recipes", "digits*")
    assert rc == 0 and "digits-cnn:" in out and "mnist-fast" not in out


# --- train ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_writes_a_complete_run_directory(capsys, tmp_path):
    rc, out, err = cli(capsys, "train", "--dataset", "digits", "--epochs", "2", "threads=1", "--out", tmp_path / "runs")
    assert rc == 0
    run = single_run_dir(tmp_path / "runs")
    assert run.name.startswith("digits-digits-cnn-")
    assert {"config.yaml", "metrics.csv", "result.json", "model.safetensors"} <= {p.name for p in run.iterdir()}
    assert not list(run.glob(".*.tmp")), "atomic-write temporaries left behind"

    # per-epoch progress on stderr (not a terminal: one plain line per epoch), the summary on stdout
    assert [line.split()[:2] for line in err.strip().splitlines()] == [["epoch", "1/2"], ["epoch", "2/2"]]
    summary, report = out.strip().splitlines()  # the result line, then where the report went
    assert re.match(rf"completed: {re.escape(str(run))}  params 53,194  best epoch [12]  "
                    r"test loss \d+\.\d{4} acc \d+\.\d\d%  \(\d+\.\ds\)$", summary), out
    assert report == f"report: {run / 'report.html'}" and (run / "report.html").exists()

    header, rows = read_csv(run / "metrics.csv")
    assert header == METRICS_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        assert 0.0 <= float(r["val_accuracy"]) <= 1.0 and float(r["train_loss"]) > 0
        assert float(r["lr"]) == pytest.approx(1e-3)

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["dataset"] == "digits" and cfg["model"] == "digits-cnn" and cfg["epochs"] == 2

    result = read_json(run / "result.json")
    assert result["status"] == "completed"
    assert result["params"] == 53_194 and result["epochs_run"] == 2
    assert result["best_epoch"] in (1, 2)
    test = result["test"]
    assert 0.0 <= test["accuracy"] <= 1.0 and test["error"] == pytest.approx(1 - test["accuracy"])
    assert f"test loss {test['loss']:.4f} acc {100 * test['accuracy']:.2f}%" in out
    best = rows[result["best_epoch"] - 1]
    assert result["best_val"]["accuracy"] == pytest.approx(float(best["val_accuracy"]))


@pytest.mark.slow
def test_quiet_train_prints_no_progress(capsys, tmp_path):
    rc, out, err = cli(capsys, "train", "--dataset", "digits", "--model", "digits-mlp", "--epochs", "1",
                       "--out", tmp_path, "--quiet")
    assert rc == 0 and err == ""
    assert out.startswith("completed: ") and "params 23,146" in out


@pytest.mark.slow
def test_saved_config_reruns_the_same_run(capsys, tmp_path, digits_run):
    rc, out, _ = cli(capsys, "train", "--config", digits_run / "config.yaml", "--out", tmp_path, "--quiet")
    assert rc == 0, out
    rerun = single_run_dir(tmp_path)
    assert (rerun / "config.yaml").read_text() == (digits_run / "config.yaml").read_text()
    original, again = read_json(digits_run / "result.json"), read_json(rerun / "result.json")
    assert again["status"] == "completed" and again["epochs_run"] == 2 and again["params"] == 53_194
    if original["device"] == again["device"] == "cpu":  # same seed, same CPU: the same numbers
        assert again["test"]["accuracy"] == pytest.approx(original["test"]["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_flags_and_overrides_beat_the_config_file(capsys, tmp_path, digits_run):
    rc, _, _ = cli(capsys, "train", "--config", digits_run / "config.yaml", "--epochs", "1",
                   "--model", "digits-mlp", "lr=0.01", "--out", tmp_path, "--quiet")
    assert rc == 0
    run = single_run_dir(tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["epochs"], cfg["model"], cfg["lr"]) == (1, "digits-mlp", 0.01)
    assert len(read_csv(run / "metrics.csv")[1]) == 1


@pytest.mark.slow
def test_run_dir_flag_uses_that_directory(capsys, tmp_path):
    target = tmp_path / "my-run"
    rc, out, _ = cli(capsys, "train", "--dataset", "digits", "--model", "digits-mlp", "--epochs", "1",
                     "--run-dir", target, "--quiet")
    assert rc == 0
    assert out.startswith(f"completed: {target}  ")
    assert read_json(target / "result.json")["status"] == "completed"


# --- evaluate ------------------------------------------------------------------------------------

EVAL_LINE = re.compile(r"(\w+): loss (\d+\.\d{4})  accuracy (\d+\.\d\d)%  error (\d+\.\d\d)%  \(\d+\.\d\ds\)")


def test_evaluate_reproduces_the_test_accuracy(capsys, digits_run):
    rc, out, err = cli(capsys, "evaluate", digits_run)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    m = EVAL_LINE.fullmatch(lines[0])
    assert m, lines[0]
    test = read_json(digits_run / "result.json")["test"]
    assert m.group(1) == "test"
    # training evaluated the model channels_last, `evaluate` re-evaluates it contiguous: the two fp32
    # code paths round differently (with the CPU's kernels), so an image on the decision edge may flip
    # (1/447) and the loss agrees to rel 1e-3; the printed numbers are rounded (.4f, .2f%) on top
    assert float(m.group(2)) == pytest.approx(test["loss"], abs=1e-3 * test["loss"] + 5e-5)
    assert float(m.group(3)) / 100 == pytest.approx(test["accuracy"], abs=1 / 447 + 5e-5 + 1e-9)
    assert float(m.group(3)) + float(m.group(4)) == pytest.approx(100.0, abs=0.011)
    # then the most confused pairs: "  T taken for P: N", as in result.json
    pairs = [m.groups() for line in lines[1:] if (m := re.fullmatch(r"  (\S+) taken for (\S+): (\d+)", line))]
    assert pairs == [(p["true"], p["predicted"], str(p["count"])) for p in test["most_confused"]]

    from tinyvision.inference import evaluate_run  # the unrounded number behind the line

    assert evaluate_run(digits_run, "test")["accuracy"] == pytest.approx(test["accuracy"], abs=1 / 447 + 1e-9)


def test_evaluate_val_split(capsys, digits_run):
    rc, out, _ = cli(capsys, "evaluate", digits_run, "--split", "val")
    assert rc == 0
    m = EVAL_LINE.fullmatch(out.splitlines()[0])
    assert m and m.group(1) == "val"
    best_val = read_json(digits_run / "result.json")["best_val"]  # the saved weights are the best epoch's
    # another code path than training's validation (contiguous vs channels_last, rounded .2f): one of
    # the 350 validation images on the decision edge may flip
    assert float(m.group(3)) / 100 == pytest.approx(best_val["accuracy"], abs=1 / 350 + 5e-5 + 1e-9)


def test_evaluate_rejects_an_unknown_split(capsys, digits_run):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(digits_run), "--split", "bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'bogus'" in err and "Traceback" not in err


# --- predict -------------------------------------------------------------------------------------

PREDICT_LINE = re.compile(r"(\S+)\t(\d)\t(\d\.\d{4})")


def test_predict_prints_one_line_per_image(capsys, tmp_path, digits_run):
    paths = write_digit_pngs(tmp_path / "pngs")
    rc, out, err = cli(capsys, "predict", digits_run, tmp_path / "pngs")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == len(paths) == 8
    for line, path in zip(lines, paths):  # sorted folder order
        m = PREDICT_LINE.fullmatch(line)
        assert m, line
        assert m.group(1) == str(path)
        assert 0.0 < float(m.group(3)) <= 1.0


def test_folder_datasets_and_predict_read_the_same_image_files(capsys, tmp_path, digits_run):
    from PIL import Image

    from tinyvision import inference
    from tinyvision.data.formats import IMAGE_SUFFIXES, read_image_folder

    assert inference.IMAGE_SUFFIXES is IMAGE_SUFFIXES  # one list, defined in data/formats.py
    assert {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"} <= set(IMAGE_SUFFIXES)
    folder = tmp_path / "images" / "seven"
    folder.mkdir(parents=True)
    for i, suffix in enumerate(IMAGE_SUFFIXES):  # every suffix, in either case, really in its format
        Image.new("L", (8, 8), 20 * i).save(folder / f"img{i}{suffix.upper() if i % 2 else suffix}")
    (folder / "notes.txt").write_text("not an image")
    (folder / "._img0.png").write_bytes(b"a macOS resource fork, not an image")
    x, _, _ = read_image_folder(tmp_path / "images", size=8, channels=1)
    found = inference.collect_images([tmp_path / "images"])
    assert len(x) == len(found) == len(IMAGE_SUFFIXES)
    assert {p.name for p in found} == {p.name for p in folder.glob("img*")}
    rc, out, err = cli(capsys, "predict", digits_run, tmp_path / "images")
    assert rc == 0 and err == "" and len(out.splitlines()) == len(IMAGE_SUFFIXES)


def test_predict_single_files_and_top_k_csv(capsys, tmp_path, digits_run):
    paths = write_digit_pngs(tmp_path / "pngs", count=3)
    out_csv = tmp_path / "pred.csv"
    rc, out, _ = cli(capsys, "predict", digits_run, paths[2], paths[0], "--top", "3", "--csv", out_csv)
    assert rc == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(paths[2]), str(paths[0])]
    header, rows = read_csv(out_csv)
    assert header == ["path", "class", "probability", "class_2", "probability_2", "class_3", "probability_3"]
    for row in rows:
        probs = [float(row[k]) for k in ("probability", "probability_2", "probability_3")]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
        assert len({row["class"], row["class_2"], row["class_3"]}) == 3


def test_predict_csv_is_written_once_and_never_overwritten(capsys, tmp_path, digits_run):
    write_digit_pngs(tmp_path / "pngs")
    out_csv = tmp_path / "out.csv"
    rc, out, _ = cli(capsys, "predict", digits_run, tmp_path / "pngs", "--csv", out_csv)
    assert rc == 0
    header, rows = read_csv(out_csv)
    assert header == ["path", "class", "probability"]
    printed = [line.split("\t") for line in out.splitlines()]
    assert [(r["path"], r["class"], f"{float(r['probability']):.4f}") for r in rows] == [tuple(p) for p in printed]

    before = out_csv.read_bytes()
    rc, out, err = cli(capsys, "predict", digits_run, tmp_path / "pngs", "--csv", out_csv)
    assert_user_error(rc, out, err, str(out_csv), "already exists")
    assert out_csv.read_bytes() == before


def test_predict_matches_the_model_on_the_same_images(capsys, tmp_path, digits_run):
    """A PNG of a test image is read in training units and gets the probability the model gives it."""
    import torch

    from tinyvision.inference import load_model, read_image

    paths = write_digit_pngs(tmp_path / "pngs")
    rc, out, _ = cli(capsys, "predict", digits_run, tmp_path / "pngs", "--csv", tmp_path / "pred.csv")
    assert rc == 0
    printed = [PREDICT_LINE.fullmatch(line).groups() for line in out.splitlines()]
    loaded = load_model(digits_run)
    meta = loaded.meta
    # the decoded PNG pixels in the units predict reads them in; they are the dataset's own units
    # (0..16) up to the PNG's 8-bit rounding (half a step of 16/255)
    x = torch.stack([read_image(p, meta["input_shape"], meta.get("pixel_max", 255)) for p in paths])
    images, _ = digits_test_images()
    assert torch.allclose(x, torch.tensor(images[:8, None], dtype=torch.float32), atol=8 / 255 + 1e-5)
    # the expected values come from those decoded pixels, not the dataset's: on a 2-epoch model the
    # rounding can move a probability by a few points, and the class of an image near the edge
    with torch.no_grad():
        probs = loaded.model(loaded.norm.apply(x)).softmax(dim=1)
    expected = [(meta["classes"][c.item()], p.item()) for p, c in zip(*probs.max(dim=1))]
    assert [(path, c) for path, c, _ in printed] == [(str(p), c) for p, (c, _) in zip(paths, expected)]
    # printed probabilities are rounded to .4f; the CSV holds them unrounded
    assert [float(p) for _, _, p in printed] == [pytest.approx(p, abs=5e-5 + 1e-5) for _, p in expected]
    _, rows = read_csv(tmp_path / "pred.csv")
    assert [(r["class"], float(r["probability"])) for r in rows] == [(c, pytest.approx(p, abs=1e-5))
                                                                     for c, p in expected]


# --- compare -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_compare_two_models(capsys, tmp_path):
    rc, out, _ = cli(capsys, "compare", "digits-mlp", "digits-cnn", "threads=1", "--dataset", "digits",
                     "--epochs", "2", "--out", tmp_path, "--quiet", "--repeats", "1")
    assert rc == 0, out
    lines = out.strip().splitlines()
    table = {model: [line for line in lines if re.search(rf"(^|=){model}\s", line)]
             for model in ("digits-mlp", "digits-cnn")}
    assert len(table["digits-mlp"]) == len(table["digits-cnn"]) == 1, out
    assert "23,146" in table["digits-mlp"][0].split() and "53,194" in table["digits-cnn"][0].split()
    assert lines.index(table["digits-mlp"][0]) < lines.index(table["digits-cnn"][0])  # in the order given

    # then a line names the experiment folder, which holds the same table as Markdown, and the report
    m = re.fullmatch(r"results in (\S+) \(results.csv, results.md\)", lines[-2])
    assert m, lines[-2]
    exp_dir = Path(m.group(1))
    assert exp_dir.parent == tmp_path
    assert lines[-1] == f"report: {exp_dir / 'report.html'}" and (exp_dir / "report.html").exists()
    md = (exp_dir / "results.md").read_text()
    assert md.startswith("| ")
    assert re.search(r"^\| (model=)?digits-mlp \|.* 23,146 \|", md, re.M), md
    assert re.search(r"^\| (model=)?digits-cnn \|.* 53,194 \|", md, re.M), md

    results = [read_json(p) for p in exp_dir.rglob("result.json")]
    assert sorted((r["model"], r["status"], r["epochs_run"], r["params"]) for r in results) == [
        ("digits-cnn", "completed", 2, 53_194), ("digits-mlp", "completed", 2, 23_146)]


@pytest.mark.parametrize("argv", [
    ["compare", "mlp:8", "--dataset", "digits", "--epochs", "1", "lr=0.01", "--repeats", "1"],  # models, flags, overrides
    ["train", "--model", "mlp:8", "lr=0.01", "--epochs", "1", "seed=1"],  # overrides on both sides of a flag
])
@pytest.mark.slow
def test_overrides_after_flags(capsys, tmp_path, argv):
    rc, _, err = cli(capsys, *argv, "threads=1", "--out", tmp_path, "--quiet")
    assert rc == 0, err
    (cfg,) = tmp_path.rglob("config.yaml")
    assert yaml.safe_load(cfg.read_text())["lr"] == 0.01


# --- user errors: one line, non-zero exit --------------------------------------------------------

def test_unknown_dataset(capsys, tmp_path):
    rc, out, err = cli(capsys, "train", "--dataset", "mnsit", "--epochs", "1", "--out", tmp_path)
    assert_user_error(rc, out, err, "'mnsit'", "Did you mean 'mnist'?", code=2)
    for name in ("digits", "mnist", "fashion-mnist", "svhn", "cifar10"):
        assert name in err
    assert list(tmp_path.iterdir()) == [], "a failed run must leave no run directory"


def test_unknown_model(capsys, tmp_path):
    rc, out, err = cli(capsys, "train", "--model", "lenett", "--out", tmp_path)
    assert_user_error(rc, out, err, "'lenett'", "Did you mean 'lenet'?", "cnn-tiny", code=2)
    rc, out, err = cli(capsys, "summary", "lenett")
    assert_user_error(rc, out, err, "Did you mean 'lenet'?", code=2)


def test_malformed_spec(capsys, tmp_path):
    rc, out, err = cli(capsys, "train", "--model", "cnn:16-32/k0", "--out", tmp_path)
    assert_user_error(rc, out, err, "'cnn:16-32/k0'", "'k0'", code=2)
    rc, out, err = cli(capsys, "summary", "cnn:16-32/k0")
    assert_user_error(rc, out, err, "'k0'", code=2)


@pytest.mark.parametrize("args, needles", [
    (["lr=-1"], ["'lr'", "-1"]),
    (["--lr", "-1"], ["'lr'"]),
    (["batch_size=0"], ["'batch_size'"]),
    (["--batch-size", "0"], ["'batch_size'"]),
    (["optimizer=sgdd"], ["'optimizer'", "'sgdd'", "'adam'"]),
    (["--optimizer", "sgdd"], ["'optimizer'", "'sgdd'"]),
    (["lrr=0.1"], ["unknown config field 'lrr'", "Did you mean 'lr'?"]),
    (["epochs=0"], ["'epochs'"]),
    (["val_size=1.5"], ["'val_size'"]),
    (["nesterov=true"], ["nesterov"]),
    (["epochs"], ["'epochs'", "key=value"]),
])
def test_invalid_hyperparameters(capsys, tmp_path, args, needles):
    rc, out, err = cli(capsys, "train", *args, "--out", tmp_path)
    assert_user_error(rc, out, err, *needles, code=2)
    assert list(tmp_path.iterdir()) == []


def test_invalid_hyperparameter_in_a_config_file(capsys, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset: digits\nbatch_size: 0\n")
    rc, out, err = cli(capsys, "train", "--config", cfg, "--out", tmp_path / "runs")
    assert_user_error(rc, out, err, "'batch_size'", code=2)


def test_missing_config_file(capsys, tmp_path):
    missing = tmp_path / "nope.yaml"
    rc, out, err = cli(capsys, "train", "--config", missing, "--out", tmp_path / "runs")
    assert_user_error(rc, out, err, str(missing), "does not exist")
    assert not (tmp_path / "runs").exists()


def test_config_file_that_is_not_a_mapping(capsys, tmp_path):
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- epochs\n- 2\n")
    rc, out, err = cli(capsys, "train", "--config", cfg, "--out", tmp_path / "runs")
    assert_user_error(rc, out, err, str(cfg), "mapping")


def test_run_dir_of_an_existing_run_is_refused(capsys, run_copy):
    before = snapshot(run_copy)
    rc, out, err = cli(capsys, "train", "--dataset", "digits", "--epochs", "1", "--run-dir", run_copy)
    assert_user_error(rc, out, err, str(run_copy), "already holds a run")
    assert snapshot(run_copy) == before


def test_evaluate_a_folder_that_is_not_a_run(capsys, tmp_path):
    write_digit_pngs(tmp_path / "pngs", count=1)
    rc, out, err = cli(capsys, "evaluate", tmp_path / "pngs")
    assert_user_error(rc, out, err, str(tmp_path / "pngs"), "not a run directory")
    rc, out, err = cli(capsys, "evaluate", tmp_path / "missing")
    assert_user_error(rc, out, err, "not a run directory")


def test_evaluate_a_run_without_weights(capsys, run_copy):
    (run_copy / "model.safetensors").unlink()
    rc, out, err = cli(capsys, "evaluate", run_copy)
    assert_user_error(rc, out, err, "model.safetensors")


def test_predict_an_unreadable_image(capsys, tmp_path, digits_run):
    folder = tmp_path / "imgs"
    write_digit_pngs(folder, count=2)
    garbage = folder / "broken.png"
    garbage.write_bytes(b"this is not a png\x00\x01\x02" * 10)
    rc, out, err = cli(capsys, "predict", digits_run, folder, "--csv", tmp_path / "p.csv")
    # the bad file is named in one line; the good ones are still classified (exit 1 at the end)
    assert rc == 1 and err.count("\n") == 1 and str(garbage) in err and "not a readable image" in err
    assert len(out.strip().splitlines()) == 2 and "broken" not in out  # one line per good image
    assert len((tmp_path / "p.csv").read_text().strip().splitlines()) == 1 + 2


def test_predict_missing_path_and_empty_folder(capsys, tmp_path, digits_run):
    rc, out, err = cli(capsys, "predict", digits_run, tmp_path / "nothere.png")
    assert_user_error(rc, out, err, str(tmp_path / "nothere.png"), "no such file")
    (tmp_path / "empty").mkdir()
    rc, out, err = cli(capsys, "predict", digits_run, tmp_path / "empty")
    assert_user_error(rc, out, err, "no image files")


def test_predict_refuses_pickle_files(capsys, tmp_path):
    import torch

    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pt)
    write_digit_pngs(tmp_path / "pngs", count=1)
    rc, out, err = cli(capsys, "predict", pt, tmp_path / "pngs")
    assert_user_error(rc, out, err, str(pt), "--trust-pickle")
    # trusted, it is read with weights_only=True, but a bare state_dict carries no spec to rebuild from
    rc, out, err = cli(capsys, "predict", pt, tmp_path / "pngs", "--trust-pickle")
    assert_user_error(rc, out, err, str(pt), "no tinyvision metadata")


def test_predict_a_weights_file_directly(capsys, tmp_path, digits_run):
    write_digit_pngs(tmp_path / "pngs", count=2)
    rc, out, _ = cli(capsys, "predict", digits_run / "model.safetensors", tmp_path / "pngs")
    rc2, out2, _ = cli(capsys, "predict", digits_run, tmp_path / "pngs")
    assert rc == rc2 == 0 and out == out2 and len(out.splitlines()) == 2


def test_missing_mnist_files_are_named_with_checksums(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, err = cli(capsys, "train", "--dataset", "mnist", "--data-dir", empty, "--model", "cnn-tiny",
                       "--epochs", "1", "--out", tmp_path / "runs")
    assert_user_error(rc, out, err, "mnist")
    for name, md5 in MNIST_MD5.items():
        assert name in err and md5 in err
        assert str(empty / "mnist" / name) in err  # where to place it
    assert [p for p in empty.rglob("*") if p.is_file()] == [], "nothing may be downloaded"
    assert not (tmp_path / "runs").exists()


# --- through a real process ----------------------------------------------------------------------

@pytest.mark.slow
def test_subprocess_unknown_dataset(tmp_path):
    proc = run_subprocess(tmp_path, "train", "--dataset", "mnsit", "--epochs", "1", "--out", "runs")
    assert proc.returncode == 2
    assert_user_error(proc.returncode, proc.stdout, proc.stderr, "Did you mean 'mnist'?")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_subprocess_unreadable_image(tmp_path, digits_run):
    bad = tmp_path / "garbage.png"
    bad.write_bytes(os.urandom(64))
    proc = run_subprocess(tmp_path, "predict", digits_run, bad)
    assert proc.returncode == 1
    assert_user_error(proc.returncode, proc.stdout, proc.stderr, str(bad))


@pytest.mark.slow
def test_subprocess_models_and_usage_error(tmp_path):
    proc = run_subprocess(tmp_path, "models", "cnn-*")
    assert proc.returncode == 0 and proc.stderr == ""
    names = set(table_rows(proc.stdout))
    assert names >= {"cnn-small", "cnn-tiny"} and all(n.startswith("cnn-") for n in names)
    proc = run_subprocess(tmp_path, "train", "--epochs", "two")  # argparse: also one line, exit 2
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("tinyvision train: error: argument --epochs")


# --- real data -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_cnn_tiny_on_real_mnist(capsys, tmp_path, shared_data):
    rc, out, err = cli(capsys, "train", "--dataset", "mnist", "--data-dir", shared_data, "--model", "cnn-tiny",
                       "--epochs", "1", "val_size=5000", "threads=1", "--out", tmp_path, "--quiet")
    assert rc == 0, err
    run = single_run_dir(tmp_path)
    result = read_json(run / "result.json")
    assert result["status"] == "completed" and result["params"] == 2_710
    assert result["test"]["accuracy"] > 0.9
    assert sum(result["test"]["per_class"]["support"]) == 10_000  # the whole MNIST test set
    assert "params 2,710" in out


@pytest.mark.slow
def test_quiet_train_still_says_why_a_run_did_not_complete(capsys, tmp_path):
    rc, out, err = cli(capsys, "train", "--dataset", "digits", "--model", "digits-mlp", "--optimizer", "sgd",
                       "lr=10", "epochs=3", "--out", tmp_path, "--quiet")
    assert rc == 1
    assert out.startswith("diverged: ") and "nan" not in out  # the result line
    # lr=10 overflows within the first steps; whether the loss first shows as nan or inf, and in which
    # of the first epochs, depends on the CPU's rounding
    assert re.match(r"diverged: training loss became (nan|inf) at epoch [12]\b", err.strip()), err


def test_sigterm_before_a_run_starts_ends_the_command_like_ctrl_c() -> None:
    """A SIGTERM that comes before a run holds the stop signals (torch still importing, data
    loading) ends the command with 130 and one line, as Ctrl-C does, not by the signal."""
    code = ("import argparse, os, signal, time\n"
            "from tinyvision import cli\n"
            "def loading(args):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(60)\n"
            "    return 0\n"
            "cli._parse = lambda argv: argparse.Namespace(func=loading)\n"
            "cli.entry()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr.strip()) == (130, "tinyvision: interrupted")
