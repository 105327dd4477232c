"""Commands of one run: train (and --resume), evaluate, predict, lr-find."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ..config import RunConfig
from ..errors import ConfigError, TinyVisionError
from .common import RUN_FLAGS, _report, _run_config


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
    from ..stopping import EXIT_INTERRUPTED

    return {"completed": 0, "interrupted": EXIT_INTERRUPTED}.get(result["status"], 1)


def cmd_train(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..pipeline import train

    if args.folds is not None:  # k-fold cross-validation: K runs as one experiment, then the summary over folds
        from ..experiments.runner import cross_validate
        from ..stopping import EXIT_INTERRUPTED

        if args.resume or args.tensorboard:
            raise ConfigError(f"--folds does not go with {'--resume' if args.resume else '--tensorboard'}; "
                              "to continue a cross-validation, run it again with --run-dir EXPERIMENT_DIR")
        done = cross_validate(_run_config(args, args.overrides), args.folds, out=args.out, exp_dir=args.run_dir,
                              quiet=args.quiet)
        print(f"{done[2]}\nresults in {done[0]} (results.csv, results.md, cv.json)")
        if any(row["completed"] for row in done[1]) and not done.interrupted:
            _report(args, done[0])
        return EXIT_INTERRUPTED if done.interrupted else 0 if all(r["completed"] == r["runs"] for r in done[1]) else 1
    resume = args.resume
    if not resume and args.run_dir and distributed.relaunched(args.run_dir):
        resume = args.run_dir  # torchrun (re)started this job on an unfinished run: continue it
    if resume:
        cfg = _resume_config(args, resume)
        result = _as_it_is(resume, cfg) or train(cfg, run_dir=resume, resume=True, quiet=args.quiet)
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
    train_runs writes a change to the run's config.yaml, under its lock, once the checkpoint fits."""
    from .. import rundir, runs
    from ..config import requested_values
    from ..config_resume import resume_config

    state = rundir.inspect_run(run)
    if not state.is_run:
        raise TinyVisionError(f"--resume {run}: not a run directory ({state.kind.value})")
    if state.population_checkpoint:
        raise TinyVisionError(f"--resume {run}: its checkpoint holds a population of {len(state.checkpoint_members)} "
                              "runs; run its experiment again to continue them")
    if state.kind == rundir.Kind.FINISHED and not state.has_checkpoint:  # else it would be trained anew, over itself
        raise TinyVisionError(f"--resume {run}: it is {state.status} and holds no {runs.CHECKPOINT} to continue from; "
                              f"train a new run with --config {Path(run) / runs.CONFIG} (nothing was changed)")
    saved = runs.read_config(run)
    fields = {name: getattr(args, name) for name in [*RUN_FLAGS, "model"] if hasattr(args, name)}
    return resume_config(saved, requested_values(args.config, list(args.overrides), **fields), run)


def _as_it_is(run: str, cfg: RunConfig) -> dict[str, Any] | None:
    """A finished run resumed with nothing changed: its result.json, the run left as it is (its
    times and code hash stay those of its training); else None (train_runs resumes it)."""
    from contextlib import nullcontext

    from .. import distributed, rundir, runs
    from ..files import load_state

    # as train_runs would, the writer refuses a run that another process is resuming with more epochs
    with rundir.lock_run_dir(run) if distributed.context().is_writer else nullcontext():
        state = rundir.inspect_run(run)
        if state.kind != rundir.Kind.FINISHED or runs.read_config(run) != cfg:
            return None
        load_state(Path(run) / runs.CHECKPOINT)  # a damaged checkpoint is refused, as by a resume that trains
        result = runs.read_result(run) or {}
    print(f"tinyvision: note: {run} is already {state.status}: nothing to resume (epochs=N, more than "
          f"{cfg.epochs}, trains it longer)", file=sys.stderr)
    return {"params": 0, "best_epoch": None, "total_seconds": 0.0, **result, "run_dir": run}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..inference import evaluate_run
    from ..tables import label, num, pct, to_text

    m = evaluate_run(args.run, args.split, data_dir=args.data_dir, device=args.device)
    print(f"{m['split']}: loss {m['loss']:.4f}  accuracy {100 * m['accuracy']:.2f}%  "
          f"error {100 * m['error']:.2f}%  ({m['seconds']:.2f}s)")
    print(f"top-{m['top_k']} accuracy {100 * m['top_k_accuracy']:.2f}%  macro-F1 {100 * m['macro_f1']:.2f}%  "
          f"ECE {100 * m['ece']:.2f}% ({m['calibration']['bins']} bins)")
    per_class = m["per_class"]
    rows = [{"class": c, "precision": p, "recall": r, "f1": f, "support": s} for c, p, r, f, s in
            zip(m["classes"], per_class["precision"], per_class["recall"], per_class["f1"], per_class["support"])]
    print(to_text(rows, [("class", "class", label), ("precision", "precision", pct), ("recall", "recall", pct),
                         ("f1", "F1", pct), ("support", "support", num)]))
    for pair in m["most_confused"]:
        print(f"  {pair['true']} taken for {pair['predicted']}: {pair['count']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """One line per image where the output is piped (or in --csv); on a terminal a progress bar
    and a summary, the first lines only."""
    from ..errors import DataError
    from ..inference import classify_files, collect_images, load_model, unreadable_message
    from ..tables import to_csv

    _check_outputs(args)  # before any work: a bad output path fails now, not after classifying
    loaded = load_model(args.run, trust_pickle=args.trust_pickle)
    classes = len(loaded.meta["classes"])
    if args.top > classes:
        print(f"tinyvision: note: --top {args.top}: the model has {classes} classes; showing {classes}",
              file=sys.stderr)
    on_terminal = sys.stdout.isatty()
    bar = _progress_bar(len(collect_images(args.paths))) if sys.stderr.isatty() else None
    try:
        rows, failed = classify_files(loaded, args.paths, top=args.top, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    if not rows:
        raise DataError(unreadable_message(failed))
    _print_predictions(rows, shown=TERMINAL_LINES if on_terminal else None, csv=args.csv)
    if args.csv:
        from ..files import atomic_write

        atomic_write(args.csv, to_csv(rows))
    if args.mistakes:
        _write_folder_mistakes(loaded, args.paths, args.mistakes)
    for _, reason in failed:  # one line each; the others were classified
        print(f"tinyvision: error: {reason}", file=sys.stderr)
    return 1 if failed else 0


TERMINAL_LINES = 10  # per-image lines shown on a terminal; piped output and --csv get every one


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="image", file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.2)


def _print_predictions(rows: list[dict[str, Any]], shown: int | None, csv: str | None) -> None:
    """Every row (piped), or on a terminal the first `shown` and a count of each predicted class."""
    from collections import Counter

    from ..inference import format_prediction

    for row in rows[:shown]:
        print(format_prediction(row))
    if shown is None or len(rows) <= shown:
        return
    counts = ", ".join(f"{name} {n}" for name, n in sorted(Counter(r["class"] for r in rows).items()))
    where = f"all of them in {csv}" if csv else "pipe the output or give --csv FILE for all of them"
    print(f"... {len(rows) - shown} more ({where}); {len(rows)} images by predicted class: {counts}")


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
    from ..files import atomic_write
    from ..inference import folder_mistakes
    from ..mistakes import to_csv

    folders = [p for p in paths if Path(p).is_dir()]  # one at least (_check_outputs)
    rows = [row for folder in folders for row in folder_mistakes(loaded, folder)]
    rows.sort(key=lambda r: -r["confidence"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    atomic_write(out, to_csv(rows))
    print(f"{len(rows)} misclassified images (labels from folder names), most confident first: {out}",
          file=sys.stderr)


def cmd_lr_find(args: argparse.Namespace) -> int:
    from datetime import datetime

    from ..experiments.lr_find import lr_find, write_lr_find

    cfg = _run_config(args, args.overrides)
    found = lr_find(cfg, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps)
    from .. import runs

    name = f"lr-find-{runs.slug(cfg.dataset)}-{runs.slug(cfg.model)}-{datetime.now():%Y%m%d-%H%M%S}"
    out_dir = write_lr_find(Path(args.out) / name, found, cfg)
    if found["suggested_lr"] is None:
        raise TinyVisionError("lr-find: the loss diverged too early to suggest a rate; lower --min-lr")
    print(f"suggested lr {found['suggested_lr']:.2e} (steepest descent; minimum/10: "
          f"{found['min_loss_lr']:.2e}); {len(found['rows'])} steps, stopped: {found['stopped']}")
    print(f"curve: {out_dir / 'lr_find.png'} (data: lr_find.csv, summary: lr_find.json)")
    return 0
