"""Which runs can train together, and each member's starting point.

Members share everything but PER_MEMBER (seed, init, lr, weight decay, momentum, label smoothing,
early stopping); each starts from the model a single run with its config builds (the global RNG
seeded with its seed, then the model built and initialised, in pipeline.build's order).
"""
from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple, Optional, Sequence

import torch

from ..config import RunConfig
from ..data import ImageDataset
from ..errors import TinyVisionError
from ..models import create_model
from ..models.build import Classifier
from ..optim import init_weights
from ..runtime import has_conv, resolve_device
from .stack import unstackable
from .step import OPTIMIZERS

PER_MEMBER = frozenset({"seed", "init", "lr", "momentum", "weight_decay", "label_smoothing", "patience",
                        "min_delta", "restore_best"})


def shared_key(cfg: RunConfig) -> tuple[tuple[str, str], ...]:
    """What members of one population must have in common: every other field (a field added to the
    config later is shared until it is known to be safe per member)."""
    return tuple((k, repr(v)) for k, v in sorted(cfg.model_dump().items()) if k not in PER_MEMBER)


def config_problems(cfg: RunConfig) -> list[str]:
    """Why runs with this config cannot be population members (empty: they can)."""
    problems = []
    if cfg.optimizer not in OPTIMIZERS:
        problems.append(f"optimizer {cfg.optimizer} (populations: {', '.join(OPTIMIZERS)})")
    if cfg.compile:
        problems.append("compile=true")
    if cfg.log_every:
        problems.append("log_every (steps.csv)")
    if cfg.dropout:
        problems.append("dropout (its masks come from each run's global RNG)")
    if not problems:
        problems += _model_facts(cfg).problems  # what the spec itself holds: e.g. a drop0.5 layer
    return problems


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


def member_net(cfg: RunConfig, data: ImageDataset) -> Classifier:
    """The model a single run with this config starts from, bit for bit."""
    torch.manual_seed(cfg.seed)
    net = create_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_overrides())
    init_weights(net, cfg.init)
    problems = unstackable(net)
    if problems:
        raise ValueError(f"cannot train {cfg.model} in a population: {', '.join(problems)}")
    return net  # type: ignore[return-value]


def plan_groups(cfgs: Sequence[RunConfig], cap: Optional[int], sharing: int = 1) -> list[list[int]]:
    """Indices of `cfgs` grouped into populations of at most `cap` runs that can train together (None:
    auto_population's size for their shape, `sharing` processes sharing the memory); a run that
    cannot join one is a group of its own; cap 1: one group per run (one at a time).
    Within runs that can train together, runs of one seed are taken together first: members with
    one seed share every batch (one gather, and the first layer one wide matmul)."""
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


AUTO_MAX = 32  # the largest population measured (design/populations.md: 32 MLP members, 5.1x on 2 cores)
MEMORY_SHARE = 0.5  # of the memory available now, for one population's members


def auto_population(cfg: RunConfig, sharing: int = 1) -> int:
    """Members per population by default for runs like `cfg`: as many as fit in half the memory
    available on its device, split between `sharing` processes (each member's weights, gradients,
    optimiser buffers, best and last weights, and a training batch's activations and their
    gradients, or an evaluation batch's if larger), at most AUTO_MAX. On a CPU, models with
    convolutions train one at a time: grouped convolutions measured 0.8-1.0x the speed of
    one-at-a-time there (benchmarks/README.md), so grouping would cost, not pay."""
    device = resolve_device(cfg.device)
    facts = _model_facts(cfg)
    if facts.problems or (device.type == "cpu" and facts.convolutional):
        return 1  # a model that cannot be stacked, or does not fit the data: its runs train alone
    per_member = 4 * (6 * facts.params + max(3 * cfg.batch_size, cfg.eval_batch_size) * facts.activations)  # fp32
    budget = MEMORY_SHARE * available_memory(device) / max(sharing, 1)
    return max(1, min(AUTO_MAX, int(budget // per_member)))


class ModelFacts(NamedTuple):
    params: int
    activations: int  # every layer's output values for one sample
    convolutional: bool
    problems: list[str]  # why it cannot be stacked (population.stack.unstackable)


def _model_facts(cfg: RunConfig) -> ModelFacts:
    return _facts(cfg.model, tuple(sorted(cfg.model_overrides().items())), _input_shape(cfg))


@functools.lru_cache(maxsize=64)
def _facts(model: str, overrides: tuple, input_shape: tuple[int, int, int, int]) -> ModelFacts:
    """The model built on the CPU and one zero sample through it (models.summarize)."""
    from ..models import create_model, summarize

    *shape, classes = input_shape
    try:
        with torch.random.fork_rng():  # building draws initial weights: leave the caller's RNG as it was
            net = create_model(model, tuple(shape), classes, **dict(overrides))
    except TinyVisionError as exc:  # each run fails alone, with this message
        return ModelFacts(0, 0, False, [str(exc)])
    summary = summarize(net, tuple(shape))
    activations = sum(math.prod(row.output_shape) for row in summary.rows)
    return ModelFacts(summary.params, activations, has_conv(net), unstackable(net))


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
