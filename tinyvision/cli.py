"""The `tinyvision` command: thin commands that parse, call the Python API and print.

User errors (TinyVisionError) print one line on stderr and exit non-zero; a run stopped by
Ctrl-C or SIGTERM exits with 130 after saving a resumable checkpoint.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import __version__
from .config import DEFAULT_REPEATS, RunConfig, field_docs, format_field_docs, load_config
from .errors import TinyVisionError

RUN_FLAGS = {  # flag -> type; each sets the config field of the same name (help: from config.py)
    "dataset": str, "epochs": int, "batch_size": int, "lr": float, "optimizer": str, "schedule": str,
    "weight_decay": float, "patience": int, "seed": int, "device": str, "data_dir": str,
}


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


def _population(text: str) -> Optional[int]:
    return None if text == "auto" else _positive_int(text)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run_config(args: argparse.Namespace, overrides: Sequence[str]) -> RunConfig:
    fields = {name: getattr(args, name) for name in [*RUN_FLAGS, "model"] if hasattr(args, name)}
    return load_config(args.config, list(overrides), **fields)


# -- commands ----------------------------------------------------------------------------------

def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import dataset_status, list_datasets
    from .tables import num, plain, to_text

    rows = [dataset_status(name, data_dir=args.data_dir) for name in list_datasets()]
    columns = [("name", "dataset", plain), ("input_shape", "shape", plain), ("classes", "classes", num),
               ("train", "train", num), ("val", "val", num), ("test", "test", num),
               ("present", "files", plain)]
    print(to_text(rows, columns))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import MODELS, create_model, count_parameters
    from .tables import num, plain, to_text

    rows = []
    for name in MODELS.names(args.pattern):
        preset = MODELS.get(name)
        params = count_parameters(create_model(name, preset.input_shape, 10))
        rows.append({"name": name, "spec": preset.spec, "input": "x".join(map(str, preset.input_shape)),
                     "params": params, "description": preset.description})
    columns = [("name", "model", plain), ("spec", "spec", plain), ("input", "input", plain),
               ("params", "params", num), ("description", "description", plain)]
    print(to_text(rows, columns))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from .recipes import RECIPES

    for name in RECIPES.names(args.pattern):
        recipe = RECIPES.get(name)
        print(f"{name}: {recipe.description}\n  " + " ".join(f"{k}={v}" for k, v in recipe.values.items()))
    print("use: tinyvision train recipe=NAME [key=value ...] (values given win over the recipe's)")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .data import dataset_info
    from .models import create_model, format_summary, summarize

    if args.dataset:
        info = dataset_info(args.dataset)
        shape, classes = info.input_shape, len(info.classes)
    else:
        from .models import MODELS
        shape, classes = (MODELS.get(args.model).input_shape if args.model in MODELS else (1, 28, 28)), 10
    model = create_model(args.model, tuple(shape), classes)
    print(format_summary(summarize(model, tuple(shape))))
    return 0


def _print_result(result: dict[str, Any], quiet: bool = False) -> None:
    test = result.get("test")
    if quiet and result.get("reason"):  # without --quiet the progress output has already said why
        print(f"{result['status']}: {result['reason']}", file=sys.stderr)
    line = f"{result['status']}: {result['run_dir']}  params {result['params']:,}  best epoch {result['best_epoch']}"
    if test:
        line += f"  test loss {test['loss']:.4f} acc {100 * test['accuracy']:.2f}%"
    line += f"  ({result['total_seconds']:.1f}s)"
    if result["status"] == "interrupted" and result.get("run_dir") not in (None, "None"):
        import shlex

        line += f"; continue it with: tinyvision train --resume {shlex.quote(str(result['run_dir']))}"
    print(line)


def _exit_code(result: dict[str, Any]) -> int:
    from .runtime import EXIT_INTERRUPTED
    return {"completed": 0, "interrupted": EXIT_INTERRUPTED}.get(result["status"], 1)


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .pipeline import train

    resume = args.resume
    if not resume and args.run_dir and distributed.relaunched(args.run_dir):
        resume = args.run_dir  # torchrun (re)started this job on an unfinished run: continue it
    if resume:
        cfg = _resume_config(args, resume)
        result = train(cfg, run_dir=resume, resume=True, quiet=args.quiet)
    else:
        cfg = _run_config(args, args.overrides)
        result = train(cfg, run_dir=args.run_dir, out=args.out, quiet=args.quiet)
    if distributed.context().is_writer:
        _print_result(result, args.quiet)
        if result["status"] == "completed":
            _report(args, result["run_dir"])
    return _exit_code(result)


def _resume_config(args: argparse.Namespace, run: str) -> RunConfig:
    """The run's config.yaml with what this command line changes, where --resume allows it (more
    epochs, data_dir, threads: config.resume_config; else one line saying what cannot change).
    A change is written to the run's config.yaml, under its lock, before training goes on."""
    from . import distributed, runs
    from .config import requested_values, resume_config

    saved = runs.read_config(run)
    fields = {name: getattr(args, name) for name in [*RUN_FLAGS, "model"] if hasattr(args, name)}
    cfg = resume_config(saved, requested_values(args.config, list(args.overrides), **fields), run)
    if cfg != saved and distributed.context().is_writer:
        with runs.lock_run_dir(run):
            runs.write_config(Path(run), cfg)
    return cfg


def _report(args: argparse.Namespace, path: str | Path) -> None:
    """The HTML/Markdown report at the end of train, compare and run (unless --no-report), and
    TensorBoard event files when asked for."""
    if not getattr(args, "no_report", False):
        from .report import write_report

        print(f"report: {write_report(path)[0]}")
    if getattr(args, "tensorboard", False):
        from .report import write_tensorboard

        print(f"tensorboard: {write_tensorboard(path)}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .inference import evaluate_run

    m = evaluate_run(args.run, args.split, data_dir=args.data_dir, device=args.device)
    print(f"{m['split']}: loss {m['loss']:.4f}  accuracy {100 * m['accuracy']:.2f}%  "
          f"error {100 * m['error']:.2f}%  ({m['seconds']:.2f}s)")
    for pair in m["most_confused"]:
        print(f"  {pair['true']} taken for {pair['predicted']}: {pair['count']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .errors import DataError
    from .inference import classify_files, format_prediction, load_model, unreadable_message
    from .tables import to_csv

    _check_outputs(args)  # before any work: a bad output path fails now, not after classifying
    loaded = load_model(args.run, trust_pickle=args.trust_pickle)
    classes = len(loaded.meta["classes"])
    if args.top > classes:
        print(f"tinyvision: note: --top {args.top}: the model has {classes} classes; showing {classes}",
              file=sys.stderr)
    rows, failed = classify_files(loaded, args.paths, top=args.top)
    if not rows:
        raise DataError(unreadable_message(failed))
    for row in rows:
        print(format_prediction(row))
    if args.csv:
        from .checkpoint import atomic_write

        atomic_write(args.csv, to_csv(rows))
    if args.mistakes:
        _write_folder_mistakes(loaded, args.paths, args.mistakes)
    for _, reason in failed:  # one line each; the others were classified
        print(f"tinyvision: error: {reason}", file=sys.stderr)
    return 1 if failed else 0


def _check_outputs(args: argparse.Namespace) -> None:
    """predict's --csv and --mistakes: new files, in existing folders, not the same file; --mistakes
    needs a folder among the paths."""
    outputs = [(flag, path) for flag, path in (("--csv", args.csv), ("--mistakes", args.mistakes)) if path]
    for flag, path in outputs:
        if Path(path).exists():
            raise TinyVisionError(f"{path} already exists; choose another {flag} file (nothing was overwritten)")
        if not Path(path).resolve().parent.is_dir():
            raise TinyVisionError(f"{flag} {path}: its folder {Path(path).parent} does not exist")
    if len(outputs) == 2 and Path(args.csv).resolve() == Path(args.mistakes).resolve():
        raise TinyVisionError(f"--csv and --mistakes name the same file {args.csv}; give two files")
    if args.mistakes and not any(Path(p).is_dir() for p in args.paths):
        raise TinyVisionError("--mistakes needs a folder of class sub-folders (their names are the true labels)")


def _write_folder_mistakes(loaded: Any, paths: Sequence[str], out: str) -> None:
    """--mistakes: the folders' wrongly classified images (labels from class sub-folder names),
    most confident first, in a new CSV file; a line saying how many there are."""
    from .checkpoint import atomic_write
    from .inference import folder_mistakes
    from .mistakes import to_csv

    folders = [p for p in paths if Path(p).is_dir()]  # one at least (_check_outputs)
    rows = [row for folder in folders for row in folder_mistakes(loaded, folder)]
    rows.sort(key=lambda r: -r["confidence"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    atomic_write(out, to_csv(rows))
    print(f"{len(rows)} misclassified images (labels from folder names), most confident first: {out}",
          file=sys.stderr)


def cmd_compare(args: argparse.Namespace) -> int:
    from .experiments import compare

    models = [m for m in args.items if "=" not in m]
    overrides = [o for o in args.items if "=" in o]
    if not models:
        raise TinyVisionError("compare needs at least one model (preset name or spec)")
    exp_dir, rows, table = compare(models, _run_config(args, overrides), out=args.out, repeats=args.repeats,
                                   jobs=args.jobs, quiet=args.quiet, baseline=args.baseline,
                                   population=args.population)
    return _finish_experiment(args, exp_dir, rows, table)


def _finish_experiment(args: argparse.Namespace, exp_dir: Path, rows: list[dict[str, Any]], table: str) -> int:
    print(table)
    print(f"results in {exp_dir} (results.csv, results.md)")
    if any(r["completed"] for r in rows):
        _report(args, exp_dir)
    return 0 if all(r["completed"] == r["runs"] for r in rows) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from .experiments import load_experiment, run_experiment
    from .experiments.runner import Shard

    shard = Shard.parse(args.shard) if args.shard else None  # before anything runs
    experiment = load_experiment(args.experiment, overrides=args.overrides, repeats=args.repeats)
    exp_dir = Path(args.exp_dir) if args.exp_dir else Path(args.out) / experiment.spec.name
    if shard is not None:
        return _run_shard(args, experiment, exp_dir, shard)
    return _finish_experiment(args, *run_experiment(experiment, exp_dir, jobs=args.jobs, quiet=args.quiet,
                                                    baseline=args.baseline, population=args.population))


def _run_shard(args: argparse.Namespace, experiment: Any, exp_dir: Path, shard: Any) -> int:
    """One shard's runs; the tables and report only once every run of the experiment is finished.
    Exit 0 when this shard's runs all completed."""
    from .experiments.runner import run_shard

    done = run_shard(experiment, exp_dir, shard, jobs=args.jobs, quiet=args.quiet, baseline=args.baseline,
                     population=args.population)
    if done.table is not None:
        return _finish_experiment(args, done.exp_dir, done.rows, done.table)
    print(done.waiting_line())
    return 0 if all(r.get("status") == "completed" for r in done.results) else 1


def cmd_lr_find(args: argparse.Namespace) -> int:
    from datetime import datetime

    from .experiments.lr_find import lr_find, write_lr_find

    cfg = _run_config(args, args.overrides)
    found = lr_find(cfg, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps)
    from . import runs

    name = f"lr-find-{runs.slug(cfg.dataset)}-{runs.slug(cfg.model)}-{datetime.now():%Y%m%d-%H%M%S}"
    out_dir = write_lr_find(Path(args.out) / name, found, cfg)
    if found["suggested_lr"] is None:
        raise TinyVisionError("lr-find: the loss diverged too early to suggest a rate; lower --min-lr")
    print(f"suggested lr {found['suggested_lr']:.2e} (steepest descent; minimum/10: "
          f"{found['min_loss_lr']:.2e}); {len(found['rows'])} steps, stopped: {found['stopped']}")
    print(f"curve data in {out_dir / 'lr_find.csv'}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from . import runs
    from .experiments.tune import tune
    from .experiments.tune_spec import load_tune
    from .experiments.tune_summary import format_summary

    spec = load_tune(args.tune_file, overrides=args.overrides)
    name = args.study_name or spec.name
    summary = tune(spec, Path(args.out) / runs.slug(name), trials=args.trials, storage=args.storage,
                   study_name=name, workers=args.jobs, quiet=args.quiet)
    # without --quiet each trial of this call was printed as it ended: the table adds only the others
    # (earlier calls, other machines), so no trial is printed twice
    shown = set() if args.quiet else set(summary["ran_here"])
    print(format_summary(summary, shown=shown))
    return 0 if summary["best_trial"] is not None else 1


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report, write_tensorboard

    html, md = write_report(args.path, metric=args.metric, partial=args.partial)
    print(f"report: {html}\nsummary: {md}")
    if args.tensorboard:
        print(f"tensorboard: {write_tensorboard(args.path)}")
    return 0


# -- parser ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tinyvision", description="Train, evaluate and compare MLP/CNN classifiers on small images.")
    parser.add_argument("--version", action="version", version=f"tinyvision {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("datasets", help="list datasets, their sizes and whether their files are present")
    p.add_argument("--data-dir", help="dataset cache folder (default: $TINYVISION_DATA, else the user cache)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", help="list model presets with parameter counts")
    p.add_argument("pattern", nargs="?", default="*",
                   help="wildcard filter, e.g. 'mlp*', or a word found anywhere in the name, e.g. cnn "
                        "(default: all)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("recipes", help="list named recipes: tested config values for a dataset")
    p.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'mnist*' (default: all)")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("summary", help="per-layer output shapes, parameters and multiply-adds")
    p.add_argument("model", help="preset name or spec")
    p.add_argument("--dataset", help="dataset whose input shape to use (default: the preset's)")
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

    p = sub.add_parser("compare", help="train several models with the same budget and print a table")
    _add_run_options(p, model_flag=False)
    p.add_argument("items", nargs="+", metavar="MODEL|key=value", help="models to compare, then config overrides")
    _add_parallel_options(p)
    p.add_argument("--repeats", type=_positive_int, default=DEFAULT_REPEATS,
                   help="seeds per model: the table gives mean ± std and a 95%% CI per model, then each model "
                        f"against the first (Welch's t-test) in a sentence (default: {DEFAULT_REPEATS})")
    p.add_argument("--baseline", metavar="MODEL", help="the model the others are compared with (default: the first)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("run", help="run (or resume) an experiment file: a base config, axes, repeats")
    p.add_argument("experiment", help="experiment YAML file (see examples/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the base config, e.g. epochs=1")
    p.add_argument("--help-config", action=_HelpConfig)
    p.add_argument("--repeats", type=_positive_int,
                   help=f"seeds per point (default: the file's `repeats`, else {DEFAULT_REPEATS})")
    p.add_argument("--baseline", metavar="LABEL", help="with one varied field: the point the others are "
                                                       "compared with (default: the first)")
    p.add_argument("--out", default="runs", help="parent folder of the experiment directory (default: runs)")
    p.add_argument("--exp-dir", help="experiment directory (default: OUT/<name>); re-running resumes it")
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


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """parse_args, but `key=value` overrides may also come after flags (argparse fills a
    positional list only once, before the first flag)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    late = [t for t in extra if "=" in t and not t.startswith("-")]
    unknown = [t for t in extra if t not in late]
    target = "items" if hasattr(args, "items") else "overrides"
    if unknown or (late and not hasattr(args, target)):
        parser.error(f"unrecognized arguments: {' '.join(unknown or late)}")
    if late:
        setattr(args, target, [*getattr(args, target), *late])
    return args


class _StderrLog(logging.Handler):
    """tinyvision's log records (a folder dataset's summary, files left out) as lines on stderr;
    sys.stderr is looked up per record, so a swapped stream (tests, notebooks) gets them."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "warning: " if record.levelno >= logging.WARNING else ""
        print(f"tinyvision: {level}{record.getMessage()}", file=sys.stderr)


def _show_log() -> Callable[[], None]:
    """Show INFO and above from the `tinyvision` loggers on stderr until the returned function is
    called (the library alone shows only warnings: logging's default)."""
    logger, handler = logging.getLogger("tinyvision"), _StderrLog()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)

    return undo


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    undo_log = _show_log()
    try:
        return args.func(args)
    except TinyVisionError as exc:
        print(f"tinyvision: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tinyvision: interrupted", file=sys.stderr)
        return 130
    finally:
        undo_log()


def entry() -> None:
    import os

    # cuBLAS reads this once, when CUDA starts: pipeline.build's setting comes too late in a
    # process whose earlier runs used CUDA (a compare or tune worker whose later run asks for
    # deterministic=true). So set it for every run, deterministic or not: a fixed workspace of
    # 8 x 4 MiB per cuBLAS handle, torch's default on H100/H200, elsewhere ~24 MiB more GPU memory.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        code = main()
    finally:
        distributed = sys.modules.get(f"{__package__}.distributed")  # only a run imports it (and torch)
        if distributed is not None:
            distributed.teardown()  # a torchrun worker leaves its process group before exiting
    sys.exit(code)


if __name__ == "__main__":
    entry()
