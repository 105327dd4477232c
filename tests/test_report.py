"""Reports: plots checked for content against the run files, tables, and the written HTML/Markdown."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.colors import to_rgba
from PIL import Image

import tinyvision as tv
from tinyvision import runs, tables
from tinyvision.errors import DataError, TinyVisionError
from tinyvision.report import (confident_mistakes, figure_png, plot_comparison, plot_confusion,
                               plot_learning_curves, plot_prediction_grid, plot_sweep_curves, plot_sweep_final,
                               read_experiment, write_report, write_tensorboard)
from tinyvision.report import PointRecord, RunRecord, tb
from tinyvision.report.document import Document, Heading, Table, Text, label, markdown_table, render_markdown
from tinyvision.report.html import render_html
from tinyvision.experiments.results import point_row, table_columns
from tinyvision.report.plots import use_log_axis
from tinyvision.stats import summarize

pytestmark = pytest.mark.slow  # the quick loop (-m 'not slow') leaves it out: trains the runs its reports are made from

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BASE = dict(dataset="digits", threads=1)


def train(run_dir: Path, **cfg) -> dict:
    return tv.train({**BASE, **cfg}, run_dir=run_dir, quiet=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    # lr 0.02 makes validation loss wander, so the best epoch is usually not the last
    path = tmp_path_factory.mktemp("report") / "run"
    train(path, model="digits-mlp", epochs=4, lr=0.02, seed=1)
    return path


def write_manifest(root: Path, name: str, kind: str, axes: list[str], points: list[dict]) -> None:
    (root / "manifest.json").write_text(json.dumps({"name": name, "kind": kind, "axes": axes, "points": points}))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """lr in {0.001, 0.01} x seeds {0, 1}, plus one run still running and one never started."""
    root = tmp_path_factory.mktemp("report") / "sweep"
    points = []
    for i, lr in enumerate([0.001, 0.01]):
        entries = []
        for seed in (0, 1):
            rel = f"runs/p{i:02d}-lr_{lr}/seed{seed}"
            train(root / rel, model="digits-mlp", epochs=3, lr=lr, seed=seed)
            entries.append({"seed": seed, "dir": rel})
        points.append({"id": f"p{i:02d}", "label": f"lr={lr}", "values": {"lr": lr}, "runs": entries})
    running = root / "runs/p01-lr_0.01/seed2"
    running.mkdir(parents=True)
    runs.write_result(running, {"status": "running", "started": runs.now()})
    points[1]["runs"] += [{"seed": 2, "dir": "runs/p01-lr_0.01/seed2"}, {"seed": 3, "dir": "runs/p01-lr_0.01/seed3"}]
    write_manifest(root, "lr-sweep", "sweep", ["lr"], points)
    return root


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "compare"
    points = []
    for i, model in enumerate(["digits-mlp", "digits-cnn"]):
        rel = f"runs/p{i:02d}/seed0"
        train(root / rel, model=model, epochs=2)
        points.append({"id": f"p{i:02d}", "label": model, "values": {"model": model},
                       "runs": [{"seed": 0, "dir": rel}]})
    write_manifest(root, "mlp-vs-cnn", "compare", ["model"], points)
    return root


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


# -- learning curves ---------------------------------------------------------------------------

def test_learning_curves_show_metrics_test_line_and_best_epoch(run_dir) -> None:
    rows, result = runs.read_metrics(run_dir), runs.read_result(run_dir)
    fig = plot_learning_curves(rows, result)
    ax_loss, ax_acc = fig.axes
    epochs = [r["epoch"] for r in rows]
    best = result["best_epoch"]
    for ax, key, scale, ylabel in ((ax_loss, "loss", 1, "loss (NLL, nats)"), (ax_acc, "accuracy", 100, "accuracy (%)")):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == ylabel
        lines = lines_by_label(ax)
        assert len(ax.get_lines()) == 4
        np.testing.assert_allclose(lines["train"].get_xdata(), epochs)
        np.testing.assert_allclose(lines["train"].get_ydata(), [scale * r[f"train_{key}"] for r in rows])
        np.testing.assert_allclose(lines["validation"].get_ydata(), [scale * r[f"val_{key}"] for r in rows])
        test_value = scale * result["test"][key]
        (test_label,) = [k for k in lines if k.startswith("test ")]
        test_line = lines[test_label]
        assert test_line.get_linestyle() == "--"
        np.testing.assert_allclose(test_line.get_ydata(), [test_value, test_value])
        assert test_label == (f"test {test_value:.3f}" if key == "loss" else f"test {test_value:.2f}%")
        (best_label,) = [k for k in lines if k.startswith("best epoch")]
        np.testing.assert_allclose(lines[best_label].get_xdata(), [best, best])
        assert best_label.startswith(f"best epoch {best} ")
        assert {t.get_text() for t in ax.get_legend().get_texts()} == set(lines)


def test_learning_curves_can_show_error(run_dir) -> None:
    rows = runs.read_metrics(run_dir)
    fig = plot_learning_curves(rows, runs.read_result(run_dir), metric="error")
    ax = fig.axes[1]
    assert ax.get_ylabel() == "error (%)"
    np.testing.assert_allclose(lines_by_label(ax)["validation"].get_ydata(), [100 * r["val_error"] for r in rows])
    with pytest.raises(TinyVisionError, match="accuracy, error"):
        plot_learning_curves(rows, metric="top5")


def test_learning_curves_of_an_unfinished_run_have_no_test_line(run_dir) -> None:
    fig = plot_learning_curves(runs.read_metrics(run_dir)[:2], {"status": "running"})
    labels = list(lines_by_label(fig.axes[0]))
    assert labels[:2] == ["train", "validation"] and not any(k.startswith("test") for k in labels)


# -- sweeps and comparisons --------------------------------------------------------------------

def seed_values(exp_dir: Path, point: int, column: str) -> np.ndarray:
    """(seeds, epochs) array of one metrics.csv column over the completed runs of a point."""
    manifest = json.loads((exp_dir / "manifest.json").read_text())
    dirs = [exp_dir / r["dir"] for r in manifest["points"][point]["runs"]]
    return np.array([[row[column] for row in runs.read_metrics(d)] for d in dirs if runs.is_complete(d)])


def test_sweep_curves_are_seed_means_with_std_bands(sweep_dir) -> None:
    exp = read_experiment(sweep_dir)
    fig = plot_sweep_curves(exp.points)
    ax_train, ax_val = fig.axes
    assert ax_val.get_ylabel() == "accuracy (%)" and ax_val.get_xlabel() == "epoch"
    for ax, split in ((ax_train, "train"), (ax_val, "val")):
        assert [line.get_label() for line in ax.get_lines()] == ["lr=0.001 (n=2)", "lr=0.01 (n=2)"]
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 2  # every point has two completed seeds
        for i, (line, band) in enumerate(zip(ax.get_lines(), bands)):
            values = 100 * seed_values(sweep_dir, i, f"{split}_accuracy")
            mean, std = values.mean(axis=0), values.std(axis=0, ddof=1)
            np.testing.assert_allclose(line.get_ydata(), mean, rtol=1e-6)
            y = band.get_paths()[0].vertices[:, 1]
            assert y.min() == pytest.approx((mean - std).min()) and y.max() == pytest.approx((mean + std).max())


def test_sweep_final_metric_uses_log_axis_for_lr(sweep_dir) -> None:
    exp = read_experiment(sweep_dir)
    fig = plot_sweep_final(exp.points, "lr")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "lr (log scale)"
    test_bars = ax.containers[0]
    assert test_bars.get_label() == "test (mean ± 1 std)"
    expected = [100 * np.mean([runs.read_result(r.dir)["test"]["accuracy"] for r in p.completed]) for p in exp.points]
    line = test_bars.lines[0]  # errorbar keeps the data as an object array
    np.testing.assert_allclose(np.asarray(line.get_xdata(), dtype=float), [0.001, 0.01])
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), expected)


def fake_point(values: dict, accuracies: list[float]) -> PointRecord:
    runs_ = [RunRecord(Path("x"), [], {"status": "completed", "test": {"accuracy": a}, "best_val": {"accuracy": a}})
             for a in accuracies]
    return PointRecord("p", ", ".join(f"{k}={v}" for k, v in values.items()), values, runs_)


def test_sweep_final_draws_one_series_per_setting_of_a_grid() -> None:
    grid = [fake_point({"lr": lr, "batch_size": b}, [0.5 + lr + b / 1000]) for b in (32, 64) for lr in (0.1, 0.01)]
    (ax,) = plot_sweep_final(grid, "lr", others=["lr", "batch_size"]).axes
    assert [c.get_label() for c in ax.containers] == ["test, batch_size=32 (mean ± 1 std)",
                                                      "test, batch_size=64 (mean ± 1 std)"]
    line = ax.containers[1].lines[0]  # sorted by lr
    np.testing.assert_allclose(np.asarray(line.get_xdata(), dtype=float), [0.01, 0.1])
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), [100 * 0.574, 100 * 0.664])
    zipped = [fake_point({"model": m, "batch_size": b}, [0.6, 0.8]) for m, b in (("mlp", 32), ("cnn", 64))]
    (ax,) = plot_sweep_final(zipped, "model", others=["model", "batch_size"]).axes
    assert [c.get_label() for c in ax.containers] == ["test (mean ± 1 std)", "best validation (mean ± 1 std)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mlp", "cnn"] and ax.get_xscale() == "linear"
    np.testing.assert_allclose(np.asarray(ax.containers[0].lines[0].get_ydata(), dtype=float), [70, 70])
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]  # the single seeds
    assert len(dots) == 4 and all(len(d.get_offsets()) == 2 for d in dots)


@pytest.mark.parametrize("axis, values, log", [
    ("lr", [1e-3, 1e-2], True), ("weight_decay", [1e-5, 1e-4, 1e-2], True), ("batch_size", [16, 64, 256], False),
    ("weight_decay", [0.0, 1e-3, 1e-1], False), ("model", ["mlp", "cnn"], False), ("lr", [0.1], True),
])
def test_log_axis_rule(axis, values, log) -> None:
    assert use_log_axis(axis, values) is log


def test_comparison_bars_are_the_bounded_interval_of_the_mean() -> None:
    seeds = {"near 100%": [0.99, 0.96, 0.995], "middle": [0.6, 0.7, 0.65]}
    points = [PointRecord(name, name, {"model": name},
                          [RunRecord(Path("x"), [], {"status": "completed", "params": 1000 * (i + 1),
                                                     "test": {"accuracy": a}}) for a in accs])
              for i, (name, accs) in enumerate(seeds.items())]
    (ax,) = plot_comparison(points).axes
    for container, accs in zip(ax.containers, seeds.values()):
        bounded = summarize(accs, kind="proportion")  # Student t on the logit scale
        (segment,) = container.lines[2][0].get_segments()
        np.testing.assert_allclose(segment[:, 1], [100 * bounded.ci_low, 100 * bounded.ci_high])
        assert bounded.ci_high <= 1
    near = summarize(seeds["near 100%"], kind="proportion")
    assert near.ci_high - near.mean < near.mean - near.ci_low  # asymmetric: squeezed towards 100%
    single = PointRecord("one", "one", {"model": "one"}, [points[0].runs[0]])
    (ax,) = plot_comparison([single]).axes
    assert not ax.containers[0].lines[2]  # one seed: no interval, no bar


def test_comparison_plots_test_accuracy_against_parameters(compare_dir) -> None:
    exp = read_experiment(compare_dir)
    fig = plot_comparison(exp.points)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel().startswith("parameters") and ax.get_ylabel() == "test accuracy (%)"
    assert [c.get_label() for c in ax.containers] == ["digits-mlp", "digits-cnn"]
    for container, point in zip(ax.containers, exp.points):
        result = point.completed[0].result
        line = container.lines[0]
        np.testing.assert_allclose(np.asarray(line.get_xdata(), dtype=float), [result["params"]])
        np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), [100 * result["test"]["accuracy"]])


# -- confusion and prediction grids ------------------------------------------------------------

def test_confusion_heatmap_holds_the_matrix_and_class_accuracy(run_dir) -> None:
    result = runs.read_result(run_dir)
    cm, classes = result["test"]["confusion"], result["classes"]
    fig = plot_confusion(cm, classes)
    heat, bars = fig.axes[:2]
    np.testing.assert_array_equal(heat.images[0].get_array(), np.array(cm))
    assert [t.get_text() for t in heat.get_xticklabels()] == classes
    assert [t.get_text() for t in heat.get_yticklabels()] == classes
    assert heat.get_xlabel() == "predicted class" and heat.get_ylabel() == "true class"
    assert sorted(int(t.get_text()) for t in heat.texts) == sorted(np.array(cm).ravel().tolist())
    widths = [p.get_width() for p in bars.patches]
    np.testing.assert_allclose(widths, [100 * r for r in result["test"]["per_class"]["recall"]])
    assert bars.get_xlabel() == "accuracy (%)"


def test_reliability_diagram_holds_the_runs_bins(run_dir) -> None:
    from tinyvision.report.calibration import plot_reliability, reliability_data

    result = runs.read_result(run_dir)
    cal = result["test"]["calibration"]
    data = reliability_data(result)
    assert data == {"ece": result["test"]["ece"], **cal}
    ax, hist = plot_reliability(data).axes
    full = [b for b in range(cal["bins"]) if cal["count"][b]]
    accuracy, gap = ax.containers[:2]
    np.testing.assert_allclose([bar.get_height() for bar in accuracy], [100 * cal["accuracy"][b] for b in full])
    np.testing.assert_allclose([bar.get_x() + bar.get_width() / 2 for bar in accuracy],
                               [100 * (b + 0.5) / cal["bins"] for b in full])
    np.testing.assert_allclose([bar.get_height() for bar in gap],
                               [100 * abs(cal["accuracy"][b] - cal["confidence"][b]) for b in full])
    np.testing.assert_allclose([bar.get_height() for bar in hist.containers[0]], [cal["count"][b] for b in full])
    assert f"ECE {100 * result['test']['ece']:.2f}% ({cal['bins']} bins)" in [t.get_text() for t in ax.texts]
    assert ax.get_ylabel() == "accuracy (%)" and hist.get_xlabel().startswith("confidence (%)")


def test_a_run_written_before_calibration_and_the_grid_were_kept(run_dir, tmp_path) -> None:
    """result.json without test.calibration: the diagram from predictions.safetensors' probabilities;
    predictions without the grid: no data section, and nothing reported missing."""
    from tinyvision.evaluate import calibration
    from tinyvision.files import save_state

    old = tmp_path / "old"
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("plots", "report.*"))
    result = runs.read_result(old)
    for key in ("calibration", "ece", "macro_f1", "top_k", "top_k_accuracy"):
        del result["test"][key]
    del result["test"]["per_class"]["f1"]
    runs.write_result(old, result)
    pred = runs.read_predictions(old)
    save_state(old / runs.PREDICTIONS, {"probs": pred.probs, "labels": pred.labels, "index": pred.index,
                                        "images": pred.images, "classes": list(pred.classes)})
    _, md_path = write_report(old)  # raises IncompleteReport if it missed a file
    md = md_path.read_text()
    assert "plots/data_grid.png" not in md and "plots/reliability.png" in md
    ece = calibration(pred.probs, pred.labels, 15).ece
    assert ece == pytest.approx(runs.read_result(run_dir)["test"]["ece"])
    assert f"{100 * ece:.2f}%, from the probabilities in predictions.safetensors." in md
    p, r = runs.read_result(run_dir)["test"]["per_class"]["precision"][0], result["test"]["per_class"]["recall"][0]
    assert "| F1 |" in md and f"| {100 * 2 * p * r / (p + r):.2f}% |" in md  # F1 from precision and recall


def test_the_data_grid_is_drawn_from_the_runs_predictions(run_dir) -> None:
    from tinyvision.report.dataset import plot_labelled_grid

    pred = runs.read_predictions(run_dir)
    fig = plot_labelled_grid(pred.grid_images, pred.grid_labels, pred.grid_classes)
    assert len(fig.axes) == len(pred.grid_labels) == 64
    assert [ax.get_title() for ax in fig.axes] == [pred.grid_classes[int(i)] for i in pred.grid_labels]
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(),
                               pred.grid_images[0, 0].numpy() / float(pred.grid_images.max()), rtol=1e-6)


def test_prediction_grid_marks_mistakes_in_red() -> None:
    data = tv.load_dataset("digits")
    images = data.test.images[:10].float()
    shown = (images - images.min()) / (images.max() - images.min())  # the batch's pixel range -> [0, 1]
    labels = data.test.labels[:10]
    predicted = labels.clone()
    predicted[[2, 7]] = (labels[[2, 7]] + 1) % 10  # two mistakes
    fig = plot_prediction_grid(data.test.images[:10], labels, predicted, data.classes, cols=4)
    assert len(fig.axes) == 10  # the two unused cells of the 3x4 grid are removed
    red, black = to_rgba("tab:red"), to_rgba("black")
    for i, ax in enumerate(fig.axes):
        title = ax.get_title()
        assert title == f"pred {data.classes[predicted[i]]}\ntrue {data.classes[labels[i]]}"
        wrong = i in (2, 7)
        assert to_rgba(ax.title.get_color()) == (red if wrong else black)
        assert (to_rgba(ax.spines["left"].get_edgecolor()) == red) is wrong
        np.testing.assert_allclose(ax.images[0].get_array(), shown[i, 0].numpy(), rtol=1e-6)


def test_confident_mistakes_are_wrong_and_sorted() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.05, 0.95]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert confident_mistakes(probs, labels, k=5) == [1, 3, 2]
    assert confident_mistakes(probs, labels, k=2) == [1, 3]


def test_figure_png_is_a_png_of_the_figure_size(run_dir) -> None:
    fig = plot_learning_curves(runs.read_metrics(run_dir))
    png = figure_png(fig, dpi=50)
    assert png[:8] == PNG_MAGIC
    assert Image.open(io.BytesIO(png)).size == (11 * 50, 4 * 50)


# -- documents ---------------------------------------------------------------------------------

def test_markdown_and_html_escape_cells() -> None:
    table = Table([("a", "name", label), ("b", "n", str)], [{"a": "x|y", "b": 3}, {"a": "<b>", "b": 10}])
    assert markdown_table(table).splitlines() == ["| name | n |", "|:---|---:|", "| x\\|y | 3 |", "| &lt;b&gt; | 10 |"]
    html = render_html(Document("T <script>", [Heading("h"), Text("a & b"), table]))
    assert "<script>" not in html and "T &lt;script&gt;" in html and "a &amp; b" in html
    assert '<td class="num">10</td>' in html and "<td>&lt;b&gt;</td>" in html
    assert render_markdown(Document("T", [Text("careful", note=True)])).endswith("> **Note:** careful\n")


def test_one_renderer_aligns_text_markdown_and_html_alike() -> None:
    columns = [("name", "name", label), ("n", "n", tables.num), ("acc", "acc", tables.pct),
               ("note", "note", tables.plain), ("code", "code", label)]
    rows = [{"name": "a", "n": 1234, "acc": 0.5, "note": "x", "code": "7"},
            {"name": "bb", "n": None, "acc": 0.25, "note": "-", "code": "10"}]
    right = [False, True, True, False, False]  # label columns stay left even when they hold numbers
    assert tables.right_aligned(columns, tables.cells(rows, columns)) == right
    assert Table(columns, rows).numeric() == right
    assert markdown_table(Table(columns, rows)) == tables.to_markdown(rows, columns)
    assert tables.to_markdown(rows, columns).splitlines()[1] == "|:---|---:|---:|:---|:---|"
    text = tables.to_text(rows, columns, footer=[{"name": "total", "n": 1234}])
    assert text.splitlines() == ["name       n     acc  note  code",
                                 "-----  -----  ------  ----  ----",
                                 "a      1,234  50.00%  x     7",
                                 "bb         -  25.00%  -     10",
                                 "-----  -----  ------  ----  ----",
                                 "total  1,234       -  -     -"]


def test_mean_pm_shows_no_spread_without_one() -> None:
    show = tables.mean_pm(tables.pct)
    assert show((0.9, 0.01)) == "90.00% ± 1.00%"
    assert show((0.9, None)) == show((0.9, float("nan"))) == "90.00%"  # one seed: no std
    assert show((None, None)) == show((float("nan"), float("nan"))) == "-"


def test_csv_holds_raw_values_under_the_column_keys() -> None:
    rows = [{"a": 0.123456789, "b": "x,y", "c": None}]
    assert tables.to_csv(rows) == 'a,b,c\n0.123456789,"x,y",\n'
    assert tables.to_csv(rows, [("b", "B header", label), "a"]) == 'b,a\n"x,y",0.123456789\n'


def test_experiment_tables_use_stats_summaries() -> None:
    point = {"id": "p00", "label": "lr=0.1", "values": {"lr": 0.1}}
    done = [{"status": "completed", "params": 10, "macs": 20, "test": {"accuracy": a, "loss": 0.5},
             "total_seconds": 3.0, "best_epoch": 2} for a in (0.8, 0.9)]
    two, one, none = (point_row(point, done), point_row(point, done[:1]),
                      point_row(point, [{"status": "failed"}]))
    assert two["test_accuracy_mean"] == pytest.approx(0.85)
    assert two["test_accuracy_std"] == pytest.approx(summarize([0.8, 0.9]).std)
    assert (one["test_accuracy_mean"], one["test_accuracy_std"]) == (0.8, None)  # n=1: no std
    assert none["test_accuracy_mean"] is None and none["val_loss_mean"] is None
    rows = [two, {**one, "lr": 0.2}, {**none, "lr": 0.3}]  # one row per lr, as in a sweep
    text = tables.to_text(rows, table_columns(rows))
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert "85.00% ± 7.07%" in lines["0.1"] and "±" not in lines["0.2"]
    # test acc CI, runs, params, seconds, test loss CI, test acc and loss ± std, best epoch, MACs; no
    # validation columns (no run has a validation number) and no differences (not compared here)
    assert lines["0.3"].split()[1:] == ["-", "0"] + ["-"] * 7
    bounded = summarize([0.8, 0.9], kind="proportion")  # accuracies: logit-scale t interval, inside [0, 1]
    assert (two["test_accuracy_ci_low"], two["test_accuracy_ci_high"]) == (bounded.ci_low, bounded.ci_high)
    assert f"85.00% [{100 * bounded.ci_low:.2f}, {100 * bounded.ci_high:.2f}]" in lines["0.1"] and bounded.ci_high < 1


def check_html(html: str) -> list[bytes]:
    """Self-contained: no network address, no script; every image a data URI of a PNG. Returns the PNGs."""
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "@import" not in html
    sources = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", html)
    assert len(sources) == html.count("<img")
    pngs = []
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == PNG_MAGIC
        Image.open(io.BytesIO(png)).verify()
        pngs.append(png)
    return pngs


def check_markdown_plots(path: Path, markdown: str) -> list[str]:
    names = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", markdown)
    for name in names:
        assert (path / name).read_bytes()[:8] == PNG_MAGIC
    return names


def test_write_report_for_a_run(run_dir) -> None:
    html_path, md_path = write_report(run_dir)
    assert (html_path, md_path) == (run_dir / "report.html", run_dir / "report.md")
    html, md = html_path.read_text(), md_path.read_text()
    pngs = check_html(html)
    plots = check_markdown_plots(run_dir, md)
    assert plots == ["plots/data_grid.png", "plots/learning_curves.png", "plots/confusion.png",
                     "plots/reliability.png", "plots/predictions.png", "plots/mistakes.png"]
    assert [(run_dir / p).read_bytes() for p in plots] == pngs  # the same pictures in both files
    result = runs.read_result(run_dir)
    assert f"| test accuracy | {100 * result['test']['accuracy']:.2f}% |" in md
    assert "| class | precision | recall (class accuracy) | F1 | test images |" in md
    assert f"| test macro-F1 | {100 * result['test']['macro_f1']:.2f}% |" in md
    assert f"| test ECE (15 bins) | {100 * result['test']['ece']:.2f}% |" in md
    assert f"Expected calibration error (ECE, the image-weighted mean gap): {100 * result['test']['ece']:.2f}%." in md
    assert "| true class | predicted as | count | share of true class |" in md
    assert "| fc1 | Linear | 128 | 8,320 | 8,192 |" in md  # the per-layer table (64*128 + 128)
    assert "| total |  | 1x8x8 in | 23,146 | 22,848 |" in md
    pair = result["test"]["most_confused"][0]
    assert f"| {pair['true']} | {pair['predicted']} | {pair['count']} |" in md
    assert "<td>fc1</td>" in html and "Most-confused class pairs" in html


def test_write_report_for_an_unfinished_run(run_dir, tmp_path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in (runs.CONFIG, runs.METRICS):
        shutil.copy(run_dir / name, partial / name)
    runs.write_result(partial, {"status": "interrupted"})
    html_path, md_path = write_report(partial)
    md = md_path.read_text()
    assert "This run is not complete (status: interrupted)" in md and check_markdown_plots(partial, md) == ["plots/learning_curves.png"]
    check_html(html_path.read_text())


def test_write_report_for_a_sweep(sweep_dir) -> None:
    html_path, md_path = write_report(sweep_dir)
    md = md_path.read_text()
    assert len(check_html(html_path.read_text())) == 3
    assert check_markdown_plots(sweep_dir, md) == ["plots/sweep_final.png", "plots/sweep_curves.png",
                                                   "plots/best_confusion.png"]
    assert "2 runs are not completed" in md and "lr=0.01 seed 2 (running)" in md and "seed 3 (not started)" in md
    assert "| lr=0.001 | 2/2 | 23,146 |" in md and "| lr=0.01 | 2/4 | 23,146 |" in md
    exp = read_experiment(sweep_dir)
    test = [100 * r.result["test"]["accuracy"] for r in exp.points[0].completed]
    assert f"{np.mean(test):.2f}% ± {np.std(test, ddof=1):.2f}%" in md
    assert "| lr=0.01 | 2 | running | - |" in md and "| lr=0.01 | 3 | not started | - |" in md


def test_write_report_for_a_comparison(compare_dir) -> None:
    html_path, md_path = write_report(compare_dir)
    md = md_path.read_text()
    assert md.startswith("# Comparison report: mlp-vs-cnn")
    assert "plots/comparison.png" in check_markdown_plots(compare_dir, md)
    assert "| digits-cnn | 1/1 |" in md
    check_html(html_path.read_text())


def test_write_report_refuses_other_folders(tmp_path) -> None:
    with pytest.raises(DataError, match="neither a run directory"):
        write_report(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid manifest"):
        write_report(tmp_path)


# -- TensorBoard -------------------------------------------------------------------------------

def test_write_tensorboard_explains_the_missing_package(run_dir, monkeypatch) -> None:
    monkeypatch.setattr(tb, "tensorboard_available", lambda: False)
    with pytest.raises(TinyVisionError, match=r"pip install 'tinyvision\[tensorboard\]'"):
        write_tensorboard(run_dir)
    assert not (run_dir / "tensorboard").exists()


def test_write_tensorboard_writes_the_metrics(run_dir) -> None:
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for _ in range(2):  # a second export replaces the first
        out = write_tensorboard(run_dir)
    assert out == run_dir / "tensorboard" and len(list(out.iterdir())) == 1
    events = EventAccumulator(str(out))
    events.Reload()
    rows = runs.read_metrics(run_dir)
    for tag, column in (("loss/train", "train_loss"), ("accuracy/val", "val_accuracy"), ("lr", "lr")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [int(r["epoch"]) for r in rows]
        np.testing.assert_allclose([s.value for s in scalars], [r[column] for r in rows], rtol=1e-6)
    (test,) = events.Scalars("accuracy/test")
    assert test.value == pytest.approx(runs.read_result(run_dir)["test"]["accuracy"])


def test_step_curve_bands_stay_inside_what_losses_and_accuracies_can_be():
    """Seeds at 13% and 93% (a mean of 53% ± 57%) must not draw a band below 0% or above 100%, nor
    a loss band below 0; a run diverging to 3,000 nats puts the loss panel on a log scale."""
    from tinyvision.report.plots import plot_step_curves

    def run(losses, accs):
        return [{"step": i + 1, "train_loss": l, "train_accuracy": a} for i, (l, a) in enumerate(zip(losses, accs))]

    wild = [run([2.3, 0.5, 0.1], [0.10, 0.50, 0.93]), run([2.3, 2.2, 2.3], [0.10, 0.11, 0.13])]
    diverged = [run([2.3, 3000.0, 2.3], [0.1, 0.1, 0.1]), run([2.3, 2.0, 1.9], [0.1, 0.2, 0.3])]
    fig = plot_step_curves([("lr=0.1", wild), ("lr=1", diverged)])
    ax_loss, ax_acc = fig.axes[:2]
    assert ax_loss.get_yscale() == "log"
    for ax, low, high in ((ax_acc, 0.0, 100.0), (ax_loss, 0.0, float("inf"))):
        ys = [y for band in ax.collections for path in band.get_paths() for _, y in path.vertices]
        assert ys and low <= min(ys) and max(ys) <= high
