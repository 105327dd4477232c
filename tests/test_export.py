"""Export: a finished run's model as ONNX (run in onnxruntime), torch.export's .pt2 and TorchScript, fed
the whole test split the way its JSON says, against the probabilities the run wrote; presets, a
model file with batch norm and dropout, a class given in Python; bad inputs in one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from tinyvision import runs
from tinyvision.cli import main
from tinyvision.data import load_data
from tinyvision.errors import ConfigError, TinyVisionError
from tinyvision.export import export_run, run_exported
from tinyvision.models.source import ModelError
from tinyvision.pipeline import train

pytest.importorskip("onnxruntime")
NET_FILE = Path(__file__).resolve().parents[1] / "examples" / "own-model" / "net.py"
# fp32: the exports compute in float32; precision=auto may pick bf16 on a CPU where it measures
# faster, and the probabilities the run writes would then differ from any float32 model by ~1e-2
BASE = {"dataset": "digits", "epochs": 3, "threads": 1, "batch_size": 128, "precision": "fp32"}


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits-cnn: convolutions, pooling, dense layers."""
    out = tmp_path_factory.mktemp("export") / "cnn"
    return Path(train({**BASE, "model": "digits-cnn"}, run_dir=out, quiet=True)["run_dir"])


@pytest.fixture(scope="module")
def own_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/own-model/net.py:Net: batch norm and dropout (eval mode in the export)."""
    out = tmp_path_factory.mktemp("export") / "own"
    cfg = {**BASE, "model": f"{NET_FILE}:Net", "model_args": {"width": 8}}
    return Path(train(cfg, run_dir=out, quiet=True)["run_dir"])


def fed_as_described(run_dir: Path, meta: dict) -> np.ndarray:
    """The run's test split as the JSON says to feed it: raw stored pixels, float32, (N, C, H, W)."""
    images = load_data(runs.read_config(run_dir)).test.images.numpy().astype(np.float32)
    assert meta["input"]["dtype"] == "float32" and meta["input"]["shape"] == [None, *images.shape[1:]]
    assert meta["normalization"]["in_graph"] is True
    return images


@pytest.mark.parametrize("which", ["preset_run", "own_run"])
def test_onnx_in_onnxruntime_matches_the_runs_predictions(which: str, request: pytest.FixtureRequest) -> None:
    run_dir = request.getfixturevalue(which)
    model_file, meta_file = export_run(run_dir, "onnx")
    assert model_file == run_dir / "model.onnx" and meta_file == run_dir / "model.onnx.json"
    meta = json.loads(meta_file.read_text())
    expected = runs.read_predictions(run_dir)
    assert meta["classes"] == list(expected.classes) and meta["file"] == "model.onnx"
    saved = load_model_meta(run_dir)
    assert meta["normalization"]["mean"] == saved["mean"] and meta["normalization"]["std"] == saved["std"]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    logits, probs = session.run(["logits", "probs"], {"images": fed_as_described(run_dir, meta)})
    assert probs.shape == tuple(expected.probs.shape)
    assert np.abs(probs - expected.probs.numpy()).max() < 1e-4
    assert (logits.argmax(axis=1) == expected.predicted.numpy()).all()


def load_model_meta(run_dir: Path) -> dict:
    from tinyvision.inference import load_model

    return load_model(run_dir).meta


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_torchscript_and_pt2_round_trip(preset_run: Path, fmt: str, tmp_path: Path) -> None:
    model_file, meta_file = export_run(preset_run, fmt, out=tmp_path / f"digits.{fmt}")
    assert meta_file == tmp_path / f"digits.{fmt}.json"
    meta = json.loads(meta_file.read_text())
    probs = run_exported(fmt, model_file)(fed_as_described(preset_run, meta))
    assert np.abs(probs - runs.read_predictions(preset_run).probs.numpy()).max() < 1e-4


def test_a_class_given_in_python_needs_model_in_python(tmp_path: Path) -> None:
    class Local(nn.Module):  # defined in a function: no file can rebuild it
        def __init__(self, in_channels: int, num_classes: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                      nn.Dropout(0.2), nn.Linear(16, num_classes))

        def forward(self, x):
            return self.body(x)

    run_dir = Path(train({**BASE, "model": Local}, run_dir=tmp_path / "local", quiet=True)["run_dir"])
    with pytest.raises(ModelError, match=r"in Python: tinyvision.export.export_run\(.*'onnx', model=Local\)"):
        export_run(run_dir, "onnx")
    model_file, meta_file = export_run(run_dir, "onnx", model=Local)
    probs = run_exported("onnx", model_file)(fed_as_described(run_dir, json.loads(meta_file.read_text())))
    assert np.abs(probs - runs.read_predictions(run_dir).probs.numpy()).max() < 1e-4


def test_bad_inputs_are_one_line(preset_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(TinyVisionError, match="not a run directory"):
        export_run(tmp_path, "onnx")
    with pytest.raises(ConfigError, match="unknown export format 'tflite'; valid: onnx, pt2, torchscript"):
        export_run(preset_run, "tflite")
    target = tmp_path / "kept.pt"
    target.write_bytes(b"mine")
    with pytest.raises(TinyVisionError, match="already exists; nothing was overwritten"):
        export_run(preset_run, "torchscript", out=target)
    assert target.read_bytes() == b"mine" and not (tmp_path / "kept.pt.json").exists()
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 1
    assert main(["export", str(preset_run), "--format", "tflite"]) == 2
    assert main(["export", str(preset_run), "--format", "torchscript", "--out", str(target)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("tinyvision: error: ") for line in err)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_cli_export_smoke(preset_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.pt"
    assert main(["export", str(preset_run), "--format", "torchscript", "--out", str(out)]) == 0
    assert out.exists() and (tmp_path / "m.pt.json").exists()
    assert f"torchscript: {out}" in capsys.readouterr().out
