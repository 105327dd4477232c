"""lr-find: the range test's curve, its suggestion, the files the command writes (lr_find.png: the
curve with the suggestion marked) and tv.lr_find's result, which shows its curve in a notebook."""
from __future__ import annotations

import importlib
import json
import math

import pytest
from PIL import Image

from tinyvision.cli import main
from tinyvision.config import make_config

lr_find_module = importlib.import_module("tinyvision.experiments.lr_find")  # the module, not the function
single_module = importlib.import_module("tinyvision.training.single")  # where the training step calls FusedStep

CFG = dict(dataset="digits", model="digits-mlp", optimizer="adam", batch_size=64, threads=1)


class OptimizerStep:
    """The plain optimizer.zero_grad() / optimizer.step() pair."""

    def __init__(self, optimizer) -> None:
        self.optimizer = optimizer

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self) -> None:
        self.optimizer.step()


def test_curve_rises_through_the_rates_and_suggests_one_before_divergence(monkeypatch) -> None:
    # up to lr 1000: Adam's steps of ~lr blow the logits up on any CPU (measured: smoothed loss 49 at lr
    # 0.43, 20x its minimum). At lr 10 the ReLUs may die first and leave the loss near its start (2.3),
    # which on some CPUs never crosses the divergence test: no assertion here sits on that edge.
    found = lr_find_module.lr_find(make_config(**CFG), min_lr=1e-5, max_lr=1e3, steps=160)
    rows = found["rows"]
    lrs = [r["lr"] for r in rows]
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-5)
    assert found["stopped"] in ("diverged", "nan") and lrs[-1] < 1e3  # stopped well before the last rate
    smoothed = [r["smoothed_loss"] for r in rows]
    assert min(smoothed) < 0.8 * smoothed[0]  # the loss really fell on the way up (2.30 -> 1.59)
    assert 1e-4 < found["suggested_lr"] < 1.0 and found["suggested_lr"] < lrs[-1]  # 0.010 here, before the blow-up
    # the loop's optimiser step is optimizer.step(), bit for bit
    monkeypatch.setattr(single_module, "FusedStep", OptimizerStep)
    assert lr_find_module.lr_find(make_config(**CFG), min_lr=1e-5, max_lr=1e3, steps=160) == found


def test_cli_writes_curve_and_summary(tmp_path, capsys) -> None:
    rc = main(["lr-find", "--dataset", "digits", "--model", "digits-mlp", "--steps", "60",
               "--min-lr", "1e-5", "--max-lr", "1", "--out", str(tmp_path), "threads=1"])
    out = capsys.readouterr().out
    assert rc == 0 and "suggested lr" in out
    (folder,) = tmp_path.iterdir()
    summary = json.loads((folder / "lr_find.json").read_text())
    assert summary["config"]["model"] == "digits-mlp" and summary["suggested_lr"] > 0
    lines = (folder / "lr_find.csv").read_text().splitlines()
    assert lines[0].split(",") == ["step", "lr", "loss", "smoothed_loss"]
    assert len(lines) == 1 + 60 if summary["stopped"] == "max_lr" else len(lines) > 1 + 10
    png = folder / "lr_find.png"
    assert f"curve: {png}" in out
    with Image.open(png) as image:
        image.verify()  # a whole, valid PNG
        assert image.format == "PNG" and image.size[0] > 300


def synthetic_rows() -> list[dict]:
    """A range test's shape: flat, a steep fall, a minimum, a blow-up."""
    rows = []
    for step in range(60):
        lr = 1e-5 * 10 ** (step / 10)
        loss = 2.3 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 2.5))) + (4.0 if step > 55 else 0.0)
        rows.append({"step": step, "lr": lr, "loss": loss, "smoothed_loss": loss})
    return rows


def test_the_curve_marks_and_labels_the_suggestion() -> None:
    from tinyvision.report.lr_find import MIN_LOSS, SUGGESTED, plot_lr_find

    rows = synthetic_rows()
    found = lr_find_module.suggest(rows)
    fig = plot_lr_find(rows, found["suggested_lr"], found["min_loss_lr"])
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    marks = {line.get_gid(): line.get_xdata()[0] for line in ax.lines if line.get_gid()}
    assert marks == {SUGGESTED: found["suggested_lr"], MIN_LOSS: found["min_loss_lr"]}
    labels = [text.get_text() for text in ax.texts]
    assert labels == [f"suggested {found['suggested_lr']:.2e}"]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any(label.startswith("minimum's lr / 10") for label in legend)
    low, high = ax.get_ylim()
    assert low < 0.8 < 2.3 < high < 6.3  # the curve's range shown, the blow-up cut off


def test_tv_lr_find_returns_a_result_that_shows_its_curve(tmp_path) -> None:
    import tinyvision as tv
    from tinyvision.notebook import LrFindResult

    found = tv.lr_find(CFG, min_lr=1e-5, max_lr=1.0, steps=40, out_dir=tmp_path)
    assert isinstance(found, LrFindResult) and len(found.rows) == len(found["rows"]) > 10
    assert found.suggested_lr == found["suggested_lr"] > 0
    page = found._repr_html_()
    assert '<img src="data:image/png;base64,' in page and "suggested lr" in page
    assert "suggested lr" in repr(found) and str(tmp_path) in repr(found)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr_find.csv", "lr_find.json", "lr_find.png"]
    assert "<img" in LrFindResult({"rows": synthetic_rows(), **lr_find_module.suggest(synthetic_rows())})._repr_html_()
