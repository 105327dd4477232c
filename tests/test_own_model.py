"""A user's own nn.Module goes everywhere a preset goes: train, compare, evaluate, predict, report,
resume, summary; as a file (path.py:Class), an importable class, or in Python a class, an instance
or a factory. The `loss` field. Bad model files are one line each, exit 2, nothing written."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import tinyvision as tv
from tinyvision import runs
from tinyvision.cli import main
from tinyvision.files import load_weights
from tinyvision.stopping import StopRequest

REPO = Path(__file__).resolve().parents[1]
NET = REPO / "examples" / "own-model" / "net.py"
DIGITS = {"dataset": "digits", "threads": 1}


def one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.startswith("tinyvision: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def net_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's command: `tinyvision train --model examples/own-model/net.py:Net --dataset digits`."""
    out = tmp_path_factory.mktemp("own")
    assert main(["train", "--model", f"{NET}:Net", "--dataset", "digits", "--out", str(out), "--quiet",
                 "--no-report", "threads=1"]) == 0
    (run_dir,) = out.iterdir()
    return run_dir


def test_the_example_model_reaches_95_percent_on_digits_and_its_source_is_recorded(net_run: Path) -> None:
    result = runs.read_result(net_run)
    assert result["status"] == "completed" and result["test"]["accuracy"] >= 0.95  # measured 97.8-98.0%
    source = result["model_source"]
    assert source["kind"] == "file" and source["class"] == "Net" and Path(source["file"]) == NET
    assert (net_run / runs.MODEL_SOURCE).read_bytes() == NET.read_bytes()
    import hashlib

    assert source["sha256"] == hashlib.sha256(NET.read_bytes()).hexdigest()
    assert load_weights(net_run / runs.WEIGHTS)[1]["source"] == source
    assert result["params"] == 65_834 and [row[0] for row in result["layers"]["rows"]][:2] == ["features.0",
                                                                                              "features.1"]


def test_evaluate_predict_and_report_read_the_run_back(net_run: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    assert main(["evaluate", str(net_run)]) == 0
    accuracy = runs.read_result(net_run)["test"]["accuracy"]
    assert f"accuracy {100 * accuracy:.2f}%" in capsys.readouterr().out  # the run's own test number
    images = load_digits().images
    for i in range(3):
        Image.fromarray((images[i] * 15.9).astype("uint8")).save(tmp_path / f"{i}.png")
    assert main(["predict", str(net_run), str(tmp_path), "--csv", str(tmp_path / "p.csv")]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 4
    assert main(["report", str(net_run)]) == 0 and (net_run / "report.html").stat().st_size > 10_000


def test_a_changed_file_is_rebuilt_from_the_runs_copy_saying_so(tmp_path: Path, caplog) -> None:
    mine = tmp_path / "mynet.py"
    shutil.copy(NET, mine)
    run = tv.train({**DIGITS, "model": f"{mine}:Net", "epochs": 1}, out=tmp_path / "runs", quiet=True)
    mine.write_text(mine.read_text().replace("width: int = 32", "width: int = 16"))  # edited since
    with caplog.at_level("WARNING"):
        loaded = tv.load_model(run["run_dir"])
    assert "changed since the run" in caplog.text and runs.MODEL_SOURCE in caplog.text
    assert sum(p.numel() for p in loaded.model.parameters()) == run["params"]
    mine.unlink()  # gone: the copy still rebuilds it
    assert tv.evaluate_run(run["run_dir"])["accuracy"] == run["test"]["accuracy"]


def test_a_class_an_instance_and_a_factory_from_python(tmp_path: Path) -> None:
    from usermodels import NoArgs

    built = []

    def factory() -> nn.Module:
        built.append(1)
        return NoArgs()

    by_class = tv.train({**DIGITS, "model": NoArgs, "epochs": 5}, out=tmp_path, quiet=True)
    instance = NoArgs()
    by_instance = tv.train({**DIGITS, "epochs": 5}, model=instance, out=tmp_path, quiet=True)
    by_factory = tv.train({**DIGITS, "model": factory, "epochs": 5}, out=tmp_path, quiet=True)
    assert built == [1, 1]  # the check, then the run: a factory is called per model built
    for run in (by_class, by_instance, by_factory):
        assert run["status"] == "completed" and run["test"]["accuracy"] > 0.5
    assert by_class["model"].endswith("usermodels.py:NoArgs") and by_instance["model"] == "python:NoArgs"
    assert by_factory["model"].startswith("python:") and by_factory["model_source"]["kind"] == "factory"
    saved = load_weights(Path(by_instance["run_dir"]) / runs.WEIGHTS)[0]
    assert torch.equal(saved["fc.weight"], instance.fc.weight.detach())  # the instance itself was trained


def test_a_notebook_class_is_one_line_for_commands_and_loads_in_python(tmp_path: Path, capsys) -> None:
    class Cell(nn.Module):  # defined in a cell: no file to import it from
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    run = tv.train({**DIGITS, "model": Cell, "epochs": 1}, out=tmp_path, quiet=True)
    assert run["model"] == "python:test_a_notebook_class_is_one_line_for_commands_and_loads_in_python.<locals>.Cell"
    assert (Path(run["run_dir"]) / runs.MODEL_SOURCE).read_text().lstrip().startswith("class Cell")
    assert main(["evaluate", run["run_dir"]]) == 2
    err = one_line(capsys)
    assert "cannot build again" in err and "tinyvision.load_model(" in err and "model=Cell" in err
    loaded = tv.load_model(run["run_dir"], model=Cell)
    assert tv.evaluate_run(run["run_dir"], model=Cell)["accuracy"] == run["test"]["accuracy"]
    assert isinstance(loaded.model, Cell)


def test_an_instance_stopped_then_resumed_is_bit_identical(tmp_path: Path) -> None:
    from usermodels import BNNet

    cfg = {**DIGITS, "epochs": 3, "model_args": {}, "precision": "fp32"}
    torch.manual_seed(5)
    start = BNNet(1, 10)
    whole = tv.train(cfg, model=_copy(start), run_dir=tmp_path / "whole", quiet=True)

    class StopAt(StopRequest):
        calls = 0

        @property
        def requested(self) -> bool:
            StopAt.calls += 1
            return StopAt.calls == 20  # epoch 2, step 3

    stopped = tv.train(cfg, model=_copy(start), run_dir=tmp_path / "resumed", quiet=True, stop=StopAt())
    assert stopped["status"] == "interrupted"
    resumed = tv.train(cfg, model=BNNet(1, 10), run_dir=tmp_path / "resumed", resume=True, quiet=True)
    assert resumed["status"] == "completed"
    mine, ref = (load_weights(tmp_path / d / runs.WEIGHTS)[0] for d in ("resumed", "whole"))
    assert all(torch.equal(mine[k], ref[k]) for k in ref)
    assert resumed["test"]["loss"] == whole["test"]["loss"]


def _copy(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)


@pytest.mark.parametrize("reference,needle", [
    ("missing.py:Net", "no such file"),
    ("{NET}:Nett", "net.py has no 'Nett' (its nn.Module classes: Net)"),
    ("{USER}:torch", "torch in usermodels.py is module, not an nn.Module subclass"),
    ('{USER}:DropNet model_args={{"bogus":1}}', "DropNet(input_shape=(1, 8, 8), num_classes=10, bogus=1) raised TypeError"),
    ("{FORWARD}:Net", "its forward on a batch of 1x8x8 images raised ValueError: wrong shape here"),
    ("{WRONG}:Net", "its output for 2 images is (2, 3); expected (2, 10)"),
    ("{BROKEN}:Net", "importing broken.py raised SyntaxError (line 2)"),
    ("no_such_package.models:Net", "no module named 'no_such_package'"),
])
def test_a_bad_model_is_one_line_exit_2_and_nothing_written(reference: str, needle: str, tmp_path: Path,
                                                              capsys) -> None:
    (tmp_path / "wrong.py").write_text("from torch import nn\n\nclass Net(nn.Linear):\n"
                                       "    def __init__(self):\n        super().__init__(64, 3)\n\n"
                                       "    def forward(self, x):\n        return super().forward(x.flatten(1))\n")
    (tmp_path / "broken.py").write_text("import torch\nclass Net(:\n")
    (tmp_path / "forward.py").write_text("from torch import nn\n\nclass Net(nn.Module):\n"
                                         "    def forward(self, x):\n        raise ValueError('wrong shape here')\n")
    text = reference.format(NET=NET, USER=REPO / "tests" / "usermodels.py", WRONG=tmp_path / "wrong.py",
                            BROKEN=tmp_path / "broken.py", FORWARD=tmp_path / "forward.py")
    model, *more = text.split()
    assert main(["train", "--model", model, "--dataset", "digits", "--out", str(tmp_path / "out"), "--quiet",
                 "--no-report", "--epochs", "1", *more]) == 2
    assert needle in one_line(capsys)
    assert not (tmp_path / "out").exists()  # nothing written


def test_summary_of_a_model_class(capsys) -> None:
    assert main(["summary", f"{NET}:Net", "--dataset", "digits", "--model-args", "{width: 8}"]) == 0
    out = capsys.readouterr().out
    assert "features.0" in out and "Conv2d" in out and "total" in out
    params = sum(p.numel() for p in __import__("tinyvision.models.source", fromlist=["x"])
                 .resolve_model(f"{NET}:Net", {"width": 8}).build((1, 8, 8), 10).parameters())
    assert f"{params:,}" in out


# -- the loss field ---------------------------------------------------------------------------------

def test_mse_trains_digits_mlp_and_bogus_lists_the_choices(tmp_path: Path, capsys) -> None:
    assert main(["train", "--model", "digits-mlp", "--loss", "mse", "--dataset", "digits", "--epochs", "40",
                 "--out", str(tmp_path), "--quiet", "--no-report", "lr=0.003", "threads=1"]) == 0
    result = runs.read_result(next(tmp_path.iterdir()))
    assert result["loss"] == "mse" and result["test"]["accuracy"] >= 0.85  # measured ~90%
    assert main(["train", "--loss", "bogus", "--dataset", "digits"]) == 2
    assert "loss" in (err := one_line(capsys)) and "cross_entropy, mse, nll" in err


def test_nll_for_a_log_softmax_module_and_a_callable_from_python(tmp_path: Path) -> None:
    from usermodels import LogSoftmaxNet

    nll = tv.train({**DIGITS, "model": LogSoftmaxNet, "loss": "nll", "epochs": 5}, out=tmp_path, quiet=True)
    assert nll["test"]["accuracy"] > 0.8

    def hinge(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.multi_margin_loss(out, y)

    run = tv.train({**DIGITS, "model": "digits-mlp", "epochs": 5}, loss=hinge, out=tmp_path, quiet=True)
    assert run["loss"].startswith("python:") and run["loss"].endswith("hinge")
    assert run["test"]["accuracy"] > 0.5 and runs.read_config(run["run_dir"]).loss == run["loss"]


def test_a_loss_can_be_an_experiment_axis(tmp_path: Path) -> None:
    done = tv.run({"name": "losses", "base": {**DIGITS, "model": "digits-mlp", "epochs": 2},
                   "grid": {"loss": ["cross_entropy", "mse"]}, "repeats": 1}, out=tmp_path, quiet=True)
    assert [r["label"] for r in done.rows] == ["loss=cross_entropy", "loss=mse"]
    assert "mse" in done.table and all(r["completed"] == 1 for r in done.rows)


@pytest.mark.slow
def test_compare_an_own_model_file_with_a_preset(tmp_path: Path, capsys) -> None:
    """The README's comparison with a model file: the usual table and verdict."""
    assert main(["compare", f"{NET}:Net", "digits-cnn", "--dataset", "digits", "--out", str(tmp_path),
                 "--quiet", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "net.py:Net" in out and "digits-cnn" in out and "Differences from" in out
