"""At home in a notebook: results that are still dicts (and tuples) but display themselves, figures
from the report's own plotting code, DataFrames, progress in a kernel, and the example notebooks run
end to end in a real Jupyter kernel (nbclient + ipykernel)."""
from __future__ import annotations

import base64
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinyvision as tv
from tinyvision import progress, runs
from tinyvision.notebook import ExperimentResult, RunResult

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "examples" / "notebooks"
FAST = {"dataset": "digits", "epochs": 3, "threads": 1}
PNG = "data:image/png;base64,"


def _pngs(html: str) -> list[bytes]:
    """The images embedded in an HTML fragment, decoded."""
    return [base64.b64decode(part.split('"', 1)[0]) for part in html.split(PNG)[1:]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return tv.train({**FAST, "model": "digits-mlp"}, out=tmp_path_factory.mktemp("runs"), quiet=True)


@pytest.fixture(scope="module")
def exp(tmp_path_factory: pytest.TempPathFactory) -> ExperimentResult:
    return tv.compare(["digits-mlp", "cnn:8/k3/fc32"], dataset="digits", epochs=3, threads=1, repeats=2,
                      out=tmp_path_factory.mktemp("compare"), quiet=True)


# -- a run ------------------------------------------------------------------------------------------

def test_a_run_is_still_its_result_dict(run: RunResult) -> None:
    assert isinstance(run, dict) and run == runs.read_result(run["run_dir"])
    assert 0 < run["test"]["accuracy"] <= 1 and run.dir == Path(run["run_dir"])
    assert tv.train.__module__ == "tinyvision.notebook"


def test_a_run_shows_its_table_curves_and_confusion_matrix(run: RunResult) -> None:
    html = run._repr_html_()
    assert "<table>" in html and "test accuracy" in html and f"{100 * run['test']['accuracy']:.2f}%" in html
    images = _pngs(html)
    assert len(images) == 2 and all(i.startswith(b"\x89PNG\r\n\x1a\n") for i in images)  # curves, confusion
    text = repr(run)
    assert len(text.splitlines()) <= 40 and "test accuracy" in text and str(run.dir) in text


def test_run_figures_are_the_reports_with_the_runs_data(run: RunResult) -> None:
    history = run.history
    loss, acc = run.plot_curves().axes
    assert (loss.get_xlabel(), acc.get_ylabel()) == ("epoch", "accuracy (%)")
    train, val = loss.get_lines()[:2]
    assert list(train.get_xdata()) == [r["epoch"] for r in history]
    assert np.allclose(train.get_ydata(), [r["train_loss"] for r in history])
    assert np.allclose(acc.get_lines()[1].get_ydata(), [100 * r["val_accuracy"] for r in history])
    assert any(np.allclose(line.get_ydata(), 100 * run["test"]["accuracy"]) for line in acc.get_lines()[2:])
    assert acc.get_legend() is not None

    heatmap, bars = run.plot_confusion().axes
    assert np.array_equal(heatmap.images[0].get_array(), np.asarray(run["test"]["confusion"]))
    assert [t.get_text() for t in heatmap.get_yticklabels()] == run["classes"]
    assert len(bars.patches) == len(run["classes"])

    grid = run.plot_predictions(n=12)
    pred = runs.read_predictions(run.dir)
    cells = [ax for ax in grid.axes if ax.images]
    assert len(cells) == 12
    assert cells[0].get_title() == f"pred {run['classes'][int(pred.predicted[0])]}\ntrue {run['classes'][int(pred.labels[0])]}"
    worst = run.plot_mistakes(n=4)
    assert all("true" in ax.get_title() and "%" in ax.get_title() for ax in worst.axes if ax.images)

    reliability, counts = run.plot_reliability().axes
    cal = run["test"]["calibration"]
    heights = [bar.get_height() for bar in reliability.containers[0]]  # accuracy per non-empty bin
    assert np.allclose(heights, [100 * a for a, n in zip(cal["accuracy"], cal["count"]) if n])
    assert sum(bar.get_height() for bar in counts.containers[0]) == 447
    assert reliability.get_title() == f"Reliability diagram: {run.name}"


def test_run_data_as_dataframes(run: RunResult) -> None:
    metrics = run.metrics
    assert len(metrics) == len(run.history) and metrics["epoch"].tolist() == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= set(metrics.columns)
    results = run.results
    assert results.shape[0] == 1 and results["test_accuracy"].iloc[0] == run["test"]["accuracy"]
    assert run.per_class["support"].sum() == 447 == run.confusion.to_numpy().sum()
    assert list(run.per_class.columns) == ["precision", "recall", "f1", "support"]
    assert np.allclose(run.per_class["f1"], run["test"]["per_class"]["f1"])
    assert results["test_macro_f1"].iloc[0] == run["test"]["macro_f1"]
    assert results["test_ece"].iloc[0] == run["test"]["ece"]
    assert list(run.confusion.index) == run["classes"] and run.confusion.columns.name == "predicted"


def test_without_pandas_a_dataframe_names_the_extra(run: RunResult, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'tinyvision\[notebook\]'"):
        run.metrics
    assert run.history and run.summary["test_accuracy"] == run["test"]["accuracy"]  # plain Python still works


def test_load_reopens_a_run_and_refuses_other_folders(run: RunResult, tmp_path: Path) -> None:
    again = tv.load(run.dir)
    assert isinstance(again, RunResult) and again == run and again.dir == run.dir
    with pytest.raises(tv.DataError, match="neither a run directory"):
        tv.load(tmp_path)


# -- an experiment ------------------------------------------------------------------------------------

def test_compare_still_unpacks_and_shows_table_verdict_and_plots(exp: ExperimentResult) -> None:
    exp_dir, rows, table = exp
    assert exp_dir == exp.dir and (exp_dir / "results.csv").exists() and "test acc 95% CI" in table
    assert [r["completed"] for r in rows] == [2, 2]
    html = exp._repr_html_()
    assert "<table>" in html and "test acc 95% CI" in html and "Differences from digits-mlp" in html
    assert all(f"<li>{s}" in html.replace("&#x27;", "'") for s in exp.verdicts) and len(exp.verdicts) == 2
    assert len(_pngs(html)) == 2  # comparison, curves
    assert repr(exp).splitlines()[0].startswith("Comparison compare-digits-")


def test_experiment_figures_and_dataframes(exp: ExperimentResult) -> None:
    (ax,) = exp.plot_comparison().axes
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "test accuracy (%)"
    params = sorted(r["params"] for r in exp.rows)
    assert sorted(bar.lines[0].get_xdata()[0] for bar in ax.containers) == params  # one mean ± CI per model
    loss, acc = exp.plot_curves().axes
    assert loss.get_xlabel() == "epoch" and len(acc.collections) >= 2  # a ±1 std band per model
    (sweep,) = exp.plot_sweep().axes
    assert [t.get_text() for t in sweep.get_xticklabels()] == ["digits-mlp", "cnn:8/k3/fc32"]

    results = exp.results
    assert list(results["model"]) == ["digits-mlp", "cnn:8/k3/fc32"]
    assert {"test_accuracy_mean", "test_accuracy_ci_low", "verdict_test_accuracy"} <= set(results.columns)
    metrics = exp.metrics
    assert len(metrics) == 4 * 3 and set(metrics["seed"]) == {0, 1}
    assert len(exp.runs) == 4 and exp.runs[0].point == "model=digits-mlp" and exp.runs[1].seed == 1


def test_load_reopens_an_experiment_with_the_same_table(exp: ExperimentResult) -> None:
    again = tv.load(exp.dir)
    assert isinstance(again, ExperimentResult) and again.table == exp.table
    assert again.verdicts == exp.verdicts


def test_run_an_experiment_file_with_overrides(tmp_path: Path) -> None:
    spec = tmp_path / "lr.yaml"
    spec.write_text("name: lr\nbase: {dataset: digits, model: 'mlp:16', epochs: 5, threads: 1}\n"
                    "grid: {lr: [0.001, 0.01]}\nrepeats: 3\n")
    exp = tv.run(spec, overrides={"epochs": 2}, repeats=2, out=tmp_path)
    assert exp.dir == tmp_path / "lr" and exp.metrics["epoch"].max() == 2 and len(exp.runs) == 4
    (ax,) = exp.plot_sweep().axes
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "lr (log scale)"
    assert sorted(exp.results["lr"]) == [0.001, 0.01]
    same = tv.run(spec, overrides=["epochs=2"], repeats=2, out=tmp_path)  # finished runs are kept
    assert same.table == exp.table
    inline = tv.run({"name": "inline", "base": {"dataset": "digits", "model": "mlp:16", "threads": 1},
                     "repeats": 1}, overrides={"epochs": 1}, out=tmp_path)
    assert inline.runs[0]["epochs_run"] == 1 and inline.verdicts == []


# -- progress in a kernel ---------------------------------------------------------------------------

ROW = {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.4, "val_accuracy": 0.85,
       "lr": 1e-3, "seconds": 0.1}


def _drive(bar: progress.EpochProgress, epochs: int = 2, steps: int = 3) -> None:
    for epoch in range(1, epochs + 1):
        tick = bar.start_epoch(epoch, steps)
        for _ in range(steps):
            tick()
        bar.end_epoch({**ROW, "epoch": epoch})
    bar.close()


def test_in_a_kernel_without_widgets_progress_is_one_updating_line(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(progress, "widgets_available", lambda: False)
    bar = progress.EpochProgress(3)  # stopped early after 2 of 3 epochs
    assert bar.mode == progress.NOTEBOOK
    _drive(bar)
    text = stream.getvalue()
    assert "\r" in text and text.count("\n") == 1  # one line, rewritten in place
    assert "epoch 1/3  train loss" not in text  # no per-epoch lines besides the bar
    assert "6/6" in text.rsplit("\r", 1)[-1] and "val loss 0.4000 acc 85.00%" in text


def test_in_a_kernel_with_widgets_progress_is_tqdms_notebook_bar(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from tqdm.notebook import tqdm as notebook_tqdm

    pytest.importorskip("ipywidgets")
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    bar = progress.EpochProgress(2, stream=sys.stderr)
    bar.start_epoch(1, 3)
    assert isinstance(bar.run_bar, notebook_tqdm)
    bar.close()
    assert "epoch 1/2  train loss" not in capsys.readouterr().err


def test_outside_a_kernel_progress_is_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(progress, "in_notebook", lambda: True)  # a kernel, but a stream of our own
    bar = progress.EpochProgress(2, stream=stream)
    assert bar.mode == progress.LINES
    _drive(bar)
    assert stream.getvalue().splitlines()[0].startswith("epoch 1/2  train loss 0.5000") and "\r" not in stream.getvalue()
    assert len(stream.getvalue().splitlines()) == 2


# -- a real kernel ----------------------------------------------------------------------------------

@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> str:
    """A kernelspec for this interpreter under a name of its own (never a user's `python3`); the
    kernel reads MNIST from the shared test data and never downloads."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    spec = tmp_path / "jupyter" / "kernels" / "tinyvision-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tinyvision test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("TINYVISION_DATA", str(shared_data))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend, as in Jupyter
    return "tinyvision-test"


def _execute(path: Path, kernel: str, timeout: int = 600):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name=kernel, resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def _outputs(nb, kind: str) -> list:
    return [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == kind]


@pytest.mark.slow  # a kernel's start and imports: 10-25 s
def test_in_a_real_kernel_a_run_shows_a_bar_then_itself_and_figures_show_inline(kernel: str, tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (
        "import tinyvision as tv\nrun = tv.train({'dataset': 'digits', 'model': 'mlp:16', 'epochs': 2}, out='runs')\nrun",
        "run.plot_curves()")]
    path = tmp_path / "smoke.ipynb"
    nbformat.write(nb, path)
    done = _execute(path, kernel, timeout=300)
    (shown, figure) = [o for o in _outputs(done, "execute_result")]
    assert "<table>" in shown["data"]["text/html"] and len(_pngs(shown["data"]["text/html"])) == 2
    assert shown["data"]["text/plain"].startswith("Run digits / mlp:16: completed")
    assert base64.b64decode(figure["data"]["image/png"]).startswith(b"\x89PNG")
    streams = "".join(o["text"] for o in _outputs(done, "stream"))
    bars = [o for o in _outputs(done, "display_data") if "application/vnd.jupyter.widget-view+json" in o["data"]]
    assert bars or "\r" in streams  # the widget bar, or the updating line without ipywidgets
    assert "epoch 1/2  train loss" not in streams  # never both


def test_the_example_notebooks_are_stored_without_outputs() -> None:
    import nbformat

    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [p.name for p in paths] == ["classic-setup.ipynb", "lr-sweep.ipynb", "quickstart.ipynb"]
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), path.name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart.ipynb", "lr-sweep.ipynb", "classic-setup.ipynb"])
def test_the_example_notebooks_run_top_to_bottom(name: str, kernel: str, tmp_path: Path) -> None:
    """As from a fresh clone: examples/ copied, the notebook run in its folder (runs/ lands there)."""
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
    started = time.perf_counter()
    done = _execute(tmp_path / "examples" / "notebooks" / name, kernel)  # a cell error raises CellExecutionError
    seconds = time.perf_counter() - started
    assert not _outputs(done, "error")
    assert any(len(_pngs(o["data"].get("text/html", ""))) >= 2 for o in _outputs(done, "execute_result")), \
        "no result displayed itself with its plots"
    assert (tmp_path / "examples" / "notebooks" / "runs").is_dir()
    print(f"{name}: {seconds:.0f} s")
