"""The `tinyvision` command: thin commands that parse, call the Python API and print.

User errors (TinyVisionError) print one line on stderr and exit non-zero; a run stopped by
Ctrl-C or SIGTERM exits with 130 after saving a resumable checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from . import __version__, runs
from .checkpoint import atomic_write
from .config import RunConfig, load_config
from .errors import TinyVisionError

RUN_FLAGS = {  # flag -> (type, help); each sets the config field of the same name
    "dataset": (str, "dataset name (see `tinyvision datasets`), folder:PATH or npz:PATH"),
    "epochs": (int, "number of epochs"),
    "batch_size": (int, "training batch size"),
    "lr": (float, "learning rate"),
    "optimizer": (str, "sgd, adam, adamw, adamax or adadelta"),
    "schedule": (str, "none, exponential, step, cosine or onecycle"),
    "weight_decay": (float, "L2 weight decay"),
    "patience": (int, "early stopping: epochs without validation improvement"),
    "seed": (int, "random seed (weights, order, augmentation)"),
    "device": (str, "auto, cpu, cuda, cuda:N or mps"),
    "data_dir": (str, "dataset cache folder (default: $TINYVISION_DATA, else the user cache)"),
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_run_options(p: argparse.ArgumentParser, *, model_flag: bool) -> None:
    p.add_argument("--config", metavar="YAML", help="run config file; flags and key=value override it")
    if model_flag:
        p.add_argument("--model", help="preset name (see `tinyvision models`) or spec, e.g. cnn:16-32/k3/fc128")
    for name, (kind, help_text) in RUN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=f"{help_text} (default: from config)")
    p.add_argument("--out", default="runs", help="folder for new run directories (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch output")
    p.add_argument("--no-report", action="store_true", help="skip writing report.html / report.md at the end")


def _add_parallel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="runs trained in parallel processes, each with cores/jobs threads (default: 1)")


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
    print(line + f"  ({result['total_seconds']:.1f}s)")


def _exit_code(result: dict[str, Any]) -> int:
    from .pipeline import EXIT_INTERRUPTED
    return {"completed": 0, "interrupted": EXIT_INTERRUPTED}.get(result["status"], 1)


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .pipeline import train

    resume = args.resume
    if not resume and args.run_dir and distributed.relaunched(args.run_dir):
        resume = args.run_dir  # torchrun (re)started this job on an unfinished run: continue it
    if resume:
        cfg = runs.read_config(resume)
        result = train(cfg, run_dir=resume, resume=True, quiet=args.quiet)
    else:
        cfg = _run_config(args, args.overrides)
        result = train(cfg, run_dir=args.run_dir, out=args.out, quiet=args.quiet)
    if distributed.context().is_writer:
        _print_result(result, args.quiet)
        if result["status"] == "completed":
            _report(args, result["run_dir"])
    return _exit_code(result)


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
    from .inference import load_model, predict_files
    from .tables import to_csv

    if args.csv and Path(args.csv).exists():
        raise TinyVisionError(f"{args.csv} already exists; choose another --csv file (nothing was overwritten)")
    rows = predict_files(load_model(args.run, trust_pickle=args.trust_pickle), args.paths, top=args.top)
    for row in rows:
        print(f"{row['path']}\t{row['class']}\t{row['probability']:.4f}")
    if args.csv:
        atomic_write(args.csv, to_csv(rows))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .experiments import compare

    models = [m for m in args.items if "=" not in m]
    overrides = [o for o in args.items if "=" in o]
    if not models:
        raise TinyVisionError("compare needs at least one model (preset name or spec)")
    exp_dir, rows, table = compare(models, _run_config(args, overrides), out=args.out,
                                   repeats=args.repeats, jobs=args.jobs, quiet=args.quiet)
    return _finish_experiment(args, exp_dir, rows, table)


def _finish_experiment(args: argparse.Namespace, exp_dir: Path, rows: list[dict[str, Any]], table: str) -> int:
    print(table)
    print(f"results in {exp_dir} (results.csv, results.md)")
    if any(r["completed"] for r in rows):
        _report(args, exp_dir)
    return 0 if all(r["completed"] == r["runs"] for r in rows) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from .experiments import load_experiment, run_experiment

    experiment = load_experiment(args.experiment, overrides=args.overrides, repeats=args.repeats)
    exp_dir = Path(args.exp_dir) if args.exp_dir else Path(args.out) / experiment.spec.name
    return _finish_experiment(args, *run_experiment(experiment, exp_dir, jobs=args.jobs, quiet=args.quiet))


def cmd_lr_find(args: argparse.Namespace) -> int:
    from datetime import datetime

    from .experiments.lr_find import lr_find, write_lr_find

    cfg = _run_config(args, args.overrides)
    found = lr_find(cfg, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps)
    name = f"lr-find-{runs.slug(cfg.dataset)}-{runs.slug(cfg.model)}-{datetime.now():%Y%m%d-%H%M%S}"
    out_dir = write_lr_find(Path(args.out) / name, found, cfg)
    if found["suggested_lr"] is None:
        raise TinyVisionError("lr-find: the loss diverged too early to suggest a rate; lower --min-lr")
    print(f"suggested lr {found['suggested_lr']:.2e} (steepest descent; minimum/10: "
          f"{found['min_loss_lr']:.2e}); {len(found['rows'])} steps, stopped: {found['stopped']}")
    print(f"curve data in {out_dir / 'lr_find.csv'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report, write_tensorboard

    html, md = write_report(args.path, metric=args.metric)
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
    p.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'mlp*' (default: all)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="per-layer output shapes, parameters and multiply-adds")
    p.add_argument("model", help="preset name or spec")
    p.add_argument("--dataset", help="dataset whose input shape to use (default: the preset's)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train one model and write a run directory")
    _add_run_options(p, model_flag=True)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lr=0.01 epochs=5")
    p.add_argument("--run-dir", help="directory for this run (default: a new one under --out)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its checkpoint")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files (needs the tensorboard extra)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="re-evaluate a saved run's model on a split")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split (default: test)")
    p.add_argument("--data-dir", help="dataset cache folder (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files or folders with a saved run")
    p.add_argument("run", help="run directory or model file")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--csv", help="also write the predictions to this new CSV file (never overwritten)")
    p.add_argument("--top", type=int, default=1, help="classes to report per image (default: 1)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a .pt/.pth file (loaded with weights_only=True); off by default")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compare", help="train several models with the same budget and print a table")
    _add_run_options(p, model_flag=False)
    p.add_argument("items", nargs="+", metavar="MODEL|key=value", help="models to compare, then config overrides")
    _add_parallel_options(p)
    p.add_argument("--repeats", type=int, default=1, help="seeds per model, reported as mean ± std (default: 1)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("run", help="run (or resume) an experiment file: a base config, axes, repeats")
    p.add_argument("experiment", help="experiment YAML file (see examples/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the base config, e.g. epochs=1")
    p.add_argument("--repeats", type=_positive_int, help="seeds per point (default: the file's)")
    p.add_argument("--out", default="runs", help="parent folder of the experiment directory (default: runs)")
    p.add_argument("--exp-dir", help="experiment directory (default: OUT/<name>); re-running resumes it")
    p.add_argument("--quiet", action="store_true", help="no per-run output")
    p.add_argument("--no-report", action="store_true", help="skip writing report.html / report.md at the end")
    _add_parallel_options(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("lr-find", help="sweep the learning rate up over a few hundred steps and suggest one")
    _add_run_options(p, model_flag=True)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--min-lr", type=float, default=1e-7, help="first learning rate (default: 1e-7)")
    p.add_argument("--max-lr", type=float, default=10.0, help="last learning rate (default: 10)")
    p.add_argument("--steps", type=_positive_int, default=200, help="number of steps (default: 200)")
    p.set_defaults(func=cmd_lr_find)

    from .experiments.tune import add_tune_command
    add_tune_command(sub)

    p = sub.add_parser("report", help="write report.html (self-contained) and report.md for a run or experiment")
    p.add_argument("path", help="run directory or experiment directory")
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "error"],
                   help="plot accuracy or error (default: accuracy)")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files (run only)")
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    try:
        return args.func(args)
    except TinyVisionError as exc:
        print(f"tinyvision: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tinyvision: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
