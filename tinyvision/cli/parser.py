"""The `tinyvision` command line: every command, its options and their help (defaults and
descriptions of config fields come from config.py)."""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from .. import __version__
from ..config import DEFAULT_REPEATS
from ..config_fields import field_docs, format_field_docs
from .common import RUN_FLAGS, _population, _positive_int
from .many_runs import cmd_compare, cmd_report, cmd_run, cmd_tune
from .info import cmd_datasets, cmd_doctor, cmd_models, cmd_recipes, cmd_show, cmd_summary
from .one_run import cmd_evaluate, cmd_lr_find, cmd_predict, cmd_train
from .export_cmd import EXPORT_FORMATS, cmd_export

class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _HelpConfig(argparse.Action):
    """--help-config: print every config field (type, default, description) and exit 0, as --help."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="list every config field (for key=value and --config files) and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(format_field_docs())
        parser.exit(0)


def _add_run_options(p: argparse.ArgumentParser, *, model_flag: bool) -> None:
    """--config, a flag per RUN_FLAGS field (help and default from config.py), --help-config, output."""
    p.add_argument("--config", metavar="YAML", help="run config file; flags and key=value override it")
    p.add_argument("--help-config", action=_HelpConfig)
    docs = {d.name: d for d in field_docs()}
    flags = {"model": str, **RUN_FLAGS} if model_flag else RUN_FLAGS
    for name, kind in flags.items():
        doc = docs[name]
        choices = f": {', '.join(doc.choices)}" if doc.choices else ""
        help_text = f"{doc.description}{choices} (default: {doc.default})".replace("%", "%%")
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=help_text)
    p.add_argument("--out", default="runs", help="folder for new run directories (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch output")
    p.add_argument("--no-report", action="store_true", help="skip writing report.html / report.md at the end")


def _add_parallel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="runs trained in parallel processes, each with cores/jobs threads (default: 1)")
    p.add_argument("--population", type=_population, default=None, metavar="N|auto",
                   help="train runs that differ only in seed, init, lr, weight decay, momentum, label "
                        "smoothing or early stopping together, as populations of at most N (one stacked "
                        "model; each run's directory as usual; checkpointed: a killed population continues "
                        "when run again); 1: one at a time (default: auto, as many as fit in half the free "
                        "memory, at most 32; on a CPU, models with convolutions one at a time)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tinyvision", description="Train, evaluate and compare MLP/CNN classifiers on small images.")
    parser.add_argument("--version", action="version", version=f"tinyvision {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("datasets", help="list datasets, their sizes and whether their files are present")
    p.add_argument("--data-dir", help="dataset cache folder (default: $TINYVISION_DATA, else the user cache)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("show", help="a look at a dataset: class counts, value ranges, a PNG of labelled images")
    p.add_argument("dataset", help="dataset name, folder:PATH or npz:PATH")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="how to read it, as a run would: e.g. image_size=64 channels=1 val_size=0.2")
    p.add_argument("--data-dir", help="dataset cache folder (default: $TINYVISION_DATA, else the user cache)")
    p.add_argument("--out", metavar="PNG", help="where to write the figure (default: DATASET-data.png here)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("doctor", help="this machine, and what auto chooses for a model here (measured: "
                                      "threads, precision, channels_last)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="run config fields, e.g. optimizer=sgd")
    p.add_argument("--model", default="lenet", help="preset, spec or file.py:Class (default: lenet)")
    p.add_argument("--dataset", default="mnist", help="whose image shape and classes (default: mnist; "
                                                       "nothing is loaded)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="training batch size (default: 64)")
    p.add_argument("--cached", action="store_true", help="show the cached choice if there is one (default: "
                                                          "measure again, and cache the result)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("models", help="list model presets with parameter counts")
    p.add_argument("pattern", nargs="?", default="*",
                   help="wildcard filter, e.g. 'mlp*', or a word found anywhere in the name, e.g. cnn "
                        "(default: all)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("recipes", help="list named recipes: tested config values for a dataset")
    p.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'mnist*' (default: all)")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("summary", help="per-layer output shapes, parameters and multiply-adds")
    p.add_argument("model", help="preset name, spec, or your model class: path/to/net.py:Net")
    p.add_argument("--dataset", help="dataset whose input shape and classes to use (default: the preset's)")
    p.add_argument("--model-args", metavar="YAML", help="constructor arguments of a model class, e.g. '{width: 64}'")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train one model and write a run directory")
    _add_run_options(p, model_flag=True)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lr=0.01 epochs=5")
    p.add_argument("--run-dir", help="directory for this run (default: a new one under --out)")
    p.add_argument("--resume", metavar="RUN",
                   help="continue an interrupted run from its checkpoint, with its own config; key=value "
                        "or flags may only add epochs (schedule none/exponential/step) or set data_dir, threads")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files (needs the tensorboard extra)")
    p.add_argument("--folds", type=_positive_int, metavar="K",
                   help="k-fold cross-validation (2 to 100): pool the train and validation images, train K runs "
                        "each validated on one stratified fold (the test split untouched) in one experiment "
                        "directory (--run-dir: its path; the same command again continues it), then print "
                        "validation and test accuracy per fold and their mean ± std and 95%% CI over the folds")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="re-evaluate a saved run's model on a split")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split (default: test)")
    p.add_argument("--data-dir", help="dataset cache folder (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files or folders with a saved run",
                       description="Classify image files or folders (searched recursively) with a saved run: "
                                   "one line per image with its --top classes and probabilities. An image "
                                   "that cannot be read is reported on stderr (one line each) and the others "
                                   "are still classified; the exit code is then 1.")
    p.add_argument("run", help="run directory or model file")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--csv", help="also write the predictions to this new CSV file (never overwritten)")
    p.add_argument("--top", type=_positive_int, default=1,
                   help="classes to report per image, with their probabilities, on the terminal and in "
                        "the CSV; at most the model's classes (default: 1)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a .pt/.pth file (loaded with weights_only=True); off by default")
    p.add_argument("--mistakes", metavar="CSV",
                   help="for folders of class sub-folders (the folder names are the true labels): write the "
                        "misclassified images, most confident first, to this new CSV (path, true, predicted, "
                        "confidence, top-3); never overwritten")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a run's model as ONNX, torch.export (.pt2) or TorchScript, "
                                      "with a JSON of what to feed it")
    p.add_argument("run", help="run directory (a finished run)")
    p.add_argument("--format", default="onnx", metavar="|".join(EXPORT_FORMATS),
                   help="onnx (onnxruntime, any language), pt2 (torch.export.load) or torchscript (torch.jit.load; "
                        "deprecated by PyTorch); each takes raw pixels and normalises them itself (default: onnx)")
    p.add_argument("--out", metavar="FILE", help="the model file (default: RUN/model.onnx, model.pt2 or "
                                                 "model.torchscript.pt); its JSON is FILE.json; never overwritten")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("compare", help="train several models with the same budget and print a table")
    _add_run_options(p, model_flag=False)
    p.add_argument("items", nargs="+", metavar="MODEL|key=value", help="models to compare, then config overrides")
    _add_parallel_options(p)
    p.add_argument("--repeats", type=_positive_int, default=DEFAULT_REPEATS,
                   help="seeds per model: the table gives mean ± std and a 95%% CI per model, then each model "
                        f"against the first (Welch's t-test) in a sentence (default: {DEFAULT_REPEATS})")
    p.add_argument("--baseline", metavar="MODEL", help="the model the others are compared with (default: the first)")
    p.add_argument("--wide", action="store_true",
                   help="print every column of the results table (default: the columns that fit the terminal; "
                        "results.md has all)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("run", help="run (or resume) an experiment file: a base config, axes, repeats")
    p.add_argument("experiment", help="experiment YAML file (see examples/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the base config, e.g. epochs=1")
    p.add_argument("--help-config", action=_HelpConfig)
    p.add_argument("--repeats", type=_positive_int,
                   help=f"seeds per point (default: the file's `repeats`, else {DEFAULT_REPEATS})")
    p.add_argument("--baseline", metavar="LABEL", help="with one varied field: the point the others are "
                                                       "compared with (default: the first)")
    p.add_argument("--wide", action="store_true",
                   help="print every column of the results table (default: the columns that fit the terminal; "
                        "results.md has all)")
    p.add_argument("--out", default="runs", help="parent folder of the experiment directory (default: runs)")
    p.add_argument("--exp-dir", help="experiment directory (default: OUT/<name>); re-running resumes it")
    p.add_argument("--data-dir", help="dataset cache folder for every run (default: $TINYVISION_DATA, else the user cache)")
    p.add_argument("--quiet", action="store_true", help="no per-run output")
    p.add_argument("--no-report", action="store_true", help="skip writing report.html / report.md at the end")
    _add_parallel_options(p)
    p.add_argument("--shard", metavar="I/N",
                   help="run only the I-th of N disjoint slices of the runs, I from 0 to N-1 (e.g. "
                        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-(N-1)); every shard "
                        "writes into the same --exp-dir; the last to finish writes the tables, else a "
                        "plain run merges (default: every run)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("lr-find", help="sweep the learning rate up over a few hundred steps and suggest one")
    _add_run_options(p, model_flag=True)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--min-lr", type=float, default=1e-7, help="first learning rate (default: 1e-7)")
    p.add_argument("--max-lr", type=float, default=10.0, help="last learning rate (default: 10)")
    p.add_argument("--steps", type=_positive_int, default=200, help="number of steps (default: 200)")
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("tune", help="tune hyper-parameters: TPE search with median pruning (Optuna)")
    p.add_argument("tune_file", metavar="TUNE.yaml", help="tune file: base config, search space, trials")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="base config overrides, e.g. epochs=5; a searched field given here is fixed")
    p.add_argument("--trials", type=_positive_int, help="finished trials the study should hold (default: the file's)")
    p.add_argument("--storage", metavar="URL",
                   help="journal file, or database URL shared by several machines, e.g. "
                        "postgresql://user@host/db (default: OUT/STUDY/study.journal)")
    p.add_argument("--study-name", help="study to create or join (default: the file's name); also its folder")
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="worker processes sharing the study, each with cores/jobs threads (default: 1)")
    p.add_argument("--out", default="runs", help="parent folder of the tuning directory (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no per-trial output while running")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("report", help="write report.html (self-contained) and report.md for a run or experiment")
    p.add_argument("path", help="run directory or experiment directory")
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "error"],
                   help="plot accuracy or error (default: accuracy)")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files (run only)")
    p.add_argument("--partial", action="store_true",
                   help="exit 0 when a file the report needs (metrics.csv, predictions.safetensors, "
                        "config.yaml) cannot be read: the report leaves that part out, with a warning "
                        "(default: the report is written, then exit 1 naming the file)")
    p.set_defaults(func=cmd_report)
    return parser

