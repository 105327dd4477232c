"""Commands that describe what there is: datasets, models, recipes, a model's layers."""
from __future__ import annotations

import argparse
from typing import Any


def cmd_datasets(args: argparse.Namespace) -> int:
    from ..data import dataset_status, list_datasets
    from ..tables import num, plain, to_text

    rows = [dataset_status(name, data_dir=args.data_dir) for name in list_datasets()]
    columns = [("name", "dataset", plain), ("input_shape", "shape", plain), ("classes", "classes", num),
               ("train", "train", num), ("val", "val", num), ("test", "test", num),
               ("present", "files", plain)]
    print(to_text(rows, columns))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import MODELS, create_model, count_parameters
    from ..tables import num, plain, to_text

    rows = []
    for name in _matching(MODELS, args.pattern):
        preset = MODELS.get(name)
        params = count_parameters(create_model(name, preset.input_shape, 10))
        rows.append({"name": name, "spec": preset.spec, "input": "x".join(map(str, preset.input_shape)),
                     "params": params, "description": preset.description})
    columns = [("name", "model", plain), ("spec", "spec", plain), ("input", "input", plain),
               ("params", "params", num), ("description", "description", plain)]
    print(to_text(rows, columns))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from ..recipes import RECIPES

    for name in _matching(RECIPES, args.pattern):
        recipe = RECIPES.get(name)
        print(f"{name}: {recipe.description}\n  " + " ".join(f"{k}={v}" for k, v in recipe.values.items()))
    print("use: tinyvision train recipe=NAME [key=value ...] (values given win over the recipe's)")
    return 0


def _matching(registry: Any, pattern: str) -> list[str]:
    """The registry's names matching the pattern; none is an error listing them all."""
    from ..errors import UnknownNameError
    from ..yamlfile import clip

    names = registry.names(pattern)
    if not names:
        raise UnknownNameError(f"no {registry.kind} matches {clip(pattern, 80)}; valid: {', '.join(registry.names())}")
    return names


def cmd_summary(args: argparse.Namespace) -> int:
    """Layers, parameters and multiply-adds of a preset, spec or model class (file.py:Class), on a
    dataset's input shape (default: the preset's, else 1x28x28 with 10 classes)."""
    import torch

    from ..config import parse_override
    from ..data import dataset_info
    from ..errors import ConfigError
    from ..models import MODELS, format_summary, summarize
    from ..models.source import check_output, resolve_model
    from ..yamlfile import clip

    if args.dataset:
        info = dataset_info(args.dataset)
        shape, classes = tuple(info.input_shape), len(info.classes)
    else:
        shape, classes = (tuple(MODELS.get(args.model).input_shape) if args.model in MODELS else (1, 28, 28)), 10
    model_args = parse_override(f"model_args={args.model_args}")[1] if args.model_args else {}
    if not isinstance(model_args, dict):
        raise ConfigError(f"--model-args {clip(args.model_args, 80)}: expected a YAML mapping of argument: value, "
                          "e.g. '{width: 64}'")
    source = resolve_model(args.model, model_args)
    with torch.random.fork_rng():
        model = source.build(shape, classes)
    if not source.is_spec:
        check_output(model, shape, classes, source.label)
    print(format_summary(summarize(model, shape)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """A dataset's class counts per split and value range per channel; a PNG of 64 labelled
    training images and the pixel histograms (--out, default DATASET-data.png)."""
    from pathlib import Path

    from ..config import load_config
    from ..data import load_data
    from ..errors import TinyVisionError
    from ..report.dataset import describe, format_description, write_data_grid
    from ..runs import slug

    if args.out and (Path(args.out).is_dir() or not Path(args.out).resolve().parent.is_dir()):
        where = "is a folder" if Path(args.out).is_dir() else f"its folder {Path(args.out).parent} does not exist"
        raise TinyVisionError(f"--out {args.out}: {where}; give the PNG file to write")
    cfg = load_config(None, list(args.overrides), dataset=args.dataset, data_dir=args.data_dir)
    data = load_data(cfg)
    print(format_description(describe(data)))
    out = Path(args.out or f"{slug(cfg.dataset)}-data.png")
    if out.exists() and not args.out:
        out = out.with_name(f"{out.stem}-{len(list(out.parent.glob(out.stem + '*')))}{out.suffix}")
    print(f"images and histograms: {write_data_grid(data, out)}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """The machine, and what `auto` chooses for a model on it: each candidate's time per training
    step (measured now, or read from the cache with --cached) and the choice."""
    from types import SimpleNamespace

    from .. import probe
    from ..config import load_config
    from ..data import dataset_info
    from ..experiments.spec import check_model
    from ..models.source import resolve_model
    from ..runtime import resolve_device

    cfg = load_config(None, list(args.overrides), model=args.model, dataset=args.dataset, batch_size=args.batch_size)
    info = dataset_info(cfg.dataset)
    check_model(cfg, {})  # a spec or model class that cannot be built: one line now, measured or not
    data = SimpleNamespace(input_shape=tuple(info.input_shape), num_classes=len(info.classes), classes=info.classes)
    device = resolve_device(cfg.device)
    print(f"machine: {probe.machine()}; torch {torch_version()}; device {device}")
    decision = probe.decide(cfg, resolve_model(cfg.model, cfg.model_args), data, device, use_cache=args.cached)
    shape = "x".join(map(str, data.input_shape))
    print(f"model {cfg.model} on {cfg.dataset} ({shape}, {data.num_classes} classes), batch {cfg.batch_size}, "
          f"{cfg.optimizer}: milliseconds per training step{' (from the cache)' if decision.cached else ''}")
    for setting in ("threads", "precision", "channels_last"):
        timings = decision.timings.get(setting)
        chosen = getattr(decision, setting)
        if timings:
            listed = "   ".join(f"{name}: {ms:.2f}" for name, ms in timings.items())
            print(f"  {setting:<14} {listed}   -> {chosen}")
        else:
            print(f"  {setting:<14} {chosen} ({decision.notes.get(setting, 'not measured')})")
    if probe.enabled():
        print(f"cache: {probe.cache_path()}")
    return 0


def torch_version() -> str:
    import torch

    return torch.__version__
