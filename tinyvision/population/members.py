"""Which runs can train together, and each member's starting point.

Members share everything but PER_MEMBER (seed, init, lr, weight decay, momentum, label smoothing,
early stopping); each starts from the model a single run with its config builds (the global RNG
seeded with its seed, then the model built and initialised, in pipeline.build's order).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..config import RunConfig
from ..data import ImageDataset
from ..models import create_model
from ..models.build import Classifier
from ..optim import init_weights
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


def plan_groups(cfgs: Sequence[RunConfig], cap: int) -> list[list[int]]:
    """Indices of `cfgs` grouped into populations of at most `cap` runs that can train together; a
    run that cannot join one is a group of its own; cap 1: one group per run (one at a time).
    Within runs that can train together, runs of one seed are taken together first: members with
    one seed share every batch (one gather, and the first layer one wide matmul)."""
    if cap <= 1:
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
        planned += [ordered[start:start + cap] for start in range(0, len(ordered), cap)]
    return planned
