"""Which runs can train together as one population, and how many at a time.

Members share everything but PER_MEMBER (seed, init, learning rate, weight decay, label
smoothing, early stopping, gradient clipping): one architecture, batch size, epochs, schedule kind,
optimiser, dataset and precision. A run with compile=true or precision=fp16 (a gradient scaler of
its own) trains alone; so do the runs of a model that torch.func.vmap cannot map (found when the
population is built: training.stacked.Unstackable).
"""
from __future__ import annotations

import functools
import json
import math
import os
from typing import NamedTuple, Optional, Sequence

import torch

from ..config import RunConfig
from ..errors import TinyVisionError
from ..runtime import has_conv, resolve_device

PER_MEMBER = frozenset({"seed", "init", "lr", "weight_decay", "label_smoothing", "patience", "min_delta",
                        "restore_best", "clip_grad_norm"})


def shared_key(cfg: RunConfig) -> tuple[tuple[str, str], ...]:
    """What members of one population must have in common: every other field (a field added to the
    config later is shared until it is known to be safe per member)."""
    return tuple((k, repr(v)) for k, v in sorted(cfg.model_dump().items()) if k not in PER_MEMBER)


def config_problems(cfg: RunConfig) -> list[str]:
    """Why runs with this config cannot be population members (empty: they can)."""
    if cfg.compile:
        return ["compile=true"]
    if cfg.precision == "fp16":  # a scaler skips a whole step on an overflow: each run its own
        return ["precision=fp16"]
    return _model_facts(cfg).problems  # a model that cannot be built: each run fails alone


def check_members(cfgs: Sequence[RunConfig]) -> None:
    """ValueError naming the first field that differs, or what a member cannot do."""
    if not cfgs:
        raise ValueError("a population needs at least one member")
    for cfg in cfgs:
        if config_problems(cfg):
            raise ValueError(f"seed {cfg.seed}: cannot train in a population: {'; '.join(config_problems(cfg))}")
    first = dict(shared_key(cfgs[0]))
    for cfg in cfgs[1:]:
        for field, value in shared_key(cfg):
            if first[field] != value:
                raise ValueError(f"population members differ in {field} ({first[field]} vs {value}); "
                                 f"only {', '.join(sorted(PER_MEMBER))} may")


def plan_groups(cfgs: Sequence[RunConfig], cap: Optional[int], sharing: int = 1) -> list[list[int]]:
    """Indices of `cfgs` grouped into populations of at most `cap` runs that can train together (None:
    auto_population's size for their shape, `sharing` processes sharing the memory); a run that
    cannot join one is a group of its own; cap 1: one group per run (one at a time).
    Within runs that can train together, runs of one seed are taken together first: members with
    one seed share every batch (one gather, mapped over the members instead of copied)."""
    if cap is not None and cap <= 1:
        return [[i] for i in range(len(cfgs))]
    by_key: dict[tuple, list[int]] = {}
    groups: list[list[int]] = []
    for i, cfg in enumerate(cfgs):
        if config_problems(cfg):
            groups.append([i])
        else:
            if shared_key(cfg) not in by_key:
                groups.append(by_key.setdefault(shared_key(cfg), []))  # filled below, placed here
            by_key[shared_key(cfg)].append(i)
    planned = []
    for group in groups:
        ordered = sorted(group, key=lambda i: cfgs[i].seed)  # stable: points keep their order
        size = cap if cap is not None else auto_population(cfgs[group[0]], sharing) if len(group) > 1 else 1
        planned += [ordered[start:start + size] for start in range(0, len(ordered), size)]
    return planned


AUTO_MAX = 32  # the largest population measured (design/one-path.md: 32 MLP members, 2.0-2.6x on 2 cores)
MEMORY_SHARE = 0.5  # of the memory available now, for one population's members


def auto_population(cfg: RunConfig, sharing: int = 1) -> int:
    """Members per population by default for runs like `cfg`: as many as fit in half the memory
    available on its device, split between `sharing` processes (each member's weights, gradients,
    optimiser buffers, best and last weights, and a training batch's activations and their
    gradients, or an evaluation batch's if larger), at most AUTO_MAX; and only where a population
    measurably trains faster than the same runs one at a time here (probe.population_pays: a
    population of LeNets measured 0.77-0.89x on 2-core CPUs, of MLPs 2-3x). Without the probe:
    on a CPU, models with convolutions train one at a time."""
    from .. import probe

    device = resolve_device(cfg.device)
    facts = _model_facts(cfg)
    if facts.problems:
        return 1  # a model that cannot be built here: its runs train alone, saying why
    if not probe.population_pays(cfg, _input_shape(cfg), device, facts.convolutional):
        return 1
    per_member = 4 * (6 * facts.params + max(3 * cfg.batch_size, cfg.eval_batch_size) * facts.activations)  # fp32
    budget = MEMORY_SHARE * available_memory(device) / max(sharing, 1)
    return max(1, min(AUTO_MAX, int(budget // per_member)))


class ModelFacts(NamedTuple):
    params: int
    activations: int  # every layer's output values for one sample
    convolutional: bool
    problems: list[str]  # why it cannot be built (each run then fails alone, saying so)


def _model_facts(cfg: RunConfig) -> ModelFacts:
    args = json.dumps(cfg.model_args, sort_keys=True, default=str)  # hashable: the cache's key
    return _facts(cfg.model, args, tuple(sorted(cfg.model_overrides().items())), _input_shape(cfg))


@functools.lru_cache(maxsize=64)
def _facts(model: str, args: str, overrides: tuple, input_shape: tuple[int, int, int, int]) -> ModelFacts:
    """The model built on the CPU and one zero sample through it (models.summarize)."""
    from ..models import summarize
    from ..models.source import resolve_model

    *shape, classes = input_shape
    if model.startswith("python:"):  # a Python object: known to the process that trains it
        return ModelFacts(0, 0, False, [])
    try:
        with torch.random.fork_rng():  # building draws initial weights: leave the caller's RNG as it was
            source = resolve_model(model, json.loads(args))
            net = source.build(tuple(shape), classes, dict(overrides))
        summary = summarize(net, tuple(shape))
    except TinyVisionError as exc:  # each run fails alone, with this message
        return ModelFacts(0, 0, False, [str(exc)])
    except Exception as exc:  # noqa: BLE001 - a user model's forward on a zero sample: its run says why
        return ModelFacts(0, 0, False, [f"{type(exc).__name__}: {exc}"])
    activations = sum(math.prod(row.output_shape) for row in summary.rows)
    return ModelFacts(summary.params, activations, has_conv(net), [])


def _input_shape(cfg: RunConfig) -> tuple[int, int, int, int]:
    """(C, H, W, classes) of the config's dataset as the catalogue gives them (a folder's or an npz
    file's: its configured image size, else 64x64 colour, and 100 classes: an estimate)."""
    from ..data.catalog import DATASETS

    if cfg.dataset in DATASETS:
        info = DATASETS.get(cfg.dataset)
        return (*info.input_shape, len(info.classes))
    size = cfg.image_size or 64  # folder:PATH or npz:PATH
    return (cfg.channels or 3, size, size, 100)


def available_memory(device: torch.device) -> int:
    """Bytes free for new tensors now: the GPU's free memory, or the system's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return 4 * 2**30
