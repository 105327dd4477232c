"""Train a population: K runs as one model, each member with its own seed, schedule, early stopping
and outcome.

build_population() makes each member's single model (members.member_net) and stacks them into a
Population: a loop.Trainee of K runs, trained by the same loop as a single run (loop.train; here
fit_population). Per step: one forward and backward of the stacked model (loss: each member's
mean cross-entropy, summed, so gradients stay per member), one per-member optimiser step. A
member that stops (early stopping, a non-finite loss: `diverged`) keeps the weights it stopped
with (a copy) and gets lr 0; the others go on until every member has stopped.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch

from ..config import RunConfig, make_config
from ..data import ImageDataset, load_data
from ..data.cached import run_normalization
from ..data.loader import DeviceLoader, Normalization
from ..loop import Hooks, NoStepLog, Outcome, RunProgress, restores_best, train
from ..models.build import Classifier
from ..runtime import (autocast, autocast_dtype, configure_threads, resolve_device, set_determinism,
                       use_channels_last)
from .data import MemberBatches
from .evaluate import evaluate_members, member_losses
from .members import check_members, member_net
from .stack import State, StackedNet
from .step import MemberOptimizer, MemberSchedules


@dataclass
class Member(RunProgress):
    """One member: its config, its epoch bookkeeping as a single run keeps it (loop.RunProgress,
    kept by loop.end_epoch), and how it ended."""

    cfg: RunConfig
    outcome: Optional[Outcome] = None  # set when the member stops training
    final_state: Optional[State] = None  # its weights from then on (the best ones where restored)
    last_state: Optional[State] = None  # its weights when it stopped (what its checkpoint holds)
    rng: Optional[torch.Tensor] = None  # torch's global RNG state as its single run leaves it after building

    @property
    def active(self) -> bool:
        return self.outcome is None


@dataclass
class Population:
    """The live objects of K runs trained as one."""

    members: list[Member]
    data: ImageDataset
    norm: Normalization
    device: torch.device
    nets: list[Classifier]  # each member's single model: its initial weights, unstacked into at the end
    net: StackedNet
    optimizer: MemberOptimizer
    schedules: MemberSchedules
    member_batches: MemberBatches  # each member's training batches
    val_loader: DeviceLoader
    dtype: Optional[torch.dtype]  # autocast, as the single runs resolve it
    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed within the current epoch (a checkpoint taken mid-epoch)
    partial: Optional[dict] = None  # the current epoch's sums so far, as a checkpoint holds them

    @property
    def cfg(self) -> RunConfig:
        return self.members[0].cfg  # the shared fields

    def member_model(self, k: int) -> Classifier:
        """Member k's single model with the weights it ended with (or its current ones)."""
        net = self.nets[k]
        net.load_state_dict(self.members[k].final_state or self.net.snapshot(k))
        return net

    # -- loop.Trainee -------------------------------------------------------------------------

    @functools.cached_property
    def smoothing(self) -> Optional[torch.Tensor]:
        """Each member's label smoothing as a [K] tensor on the device (made once: no copy per step);
        None when no member smooths."""
        values = [m.cfg.label_smoothing for m in self.members]
        return torch.tensor(values, device=self.device) if any(values) else None

    @property
    def runs(self) -> list[Member]:
        return self.members

    @property
    def cfgs(self) -> list[RunConfig]:
        return [m.cfg for m in self.members]

    def outcome(self, k: int) -> Optional[Outcome]:
        return self.members[k].outcome

    def stop(self, k: int, outcome: Outcome) -> None:
        """Member k trains no more: it keeps its weights from here (its best ones when it completed
        and restores them); the optimiser steps it no more."""
        member = self.members[k]
        member.outcome = outcome
        restore = outcome.status == "completed" and restores_best(member.cfg) and member.best_state is not None
        member.last_state = self.net.snapshot(k)
        member.final_state = member.best_state if restore else member.last_state

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.net.train()
        self.member_batches.set_epoch(self.epoch, start_step=self.step)
        return iter(self.member_batches)

    def steps_per_epoch(self) -> int:
        return len(self.member_batches)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, active: list[bool]) -> tuple[torch.Tensor, torch.Tensor, int]:
        with autocast(self.device, self.dtype):
            logits = self.net(x, self.member_batches.sizes)
        nll, loss = member_losses(logits.float(), y, self.smoothing)
        self.optimizer.zero_grad()
        loss.sum().backward()
        self.optimizer.step(self.schedules.groups(), active)
        with torch.no_grad():
            return nll, (logits.argmax(dim=-1) == y).sum(dim=-1), y.shape[-1]

    def lrs(self) -> list[float]:
        return self.schedules.lrs()

    def schedule_step(self, per_step: bool, active: list[bool]) -> None:
        self.schedules.step(per_step, active)

    def validate(self) -> list[dict]:
        val = evaluate_members(self.net, self.val_loader, self.dtype)
        return [val.row(k, "val") for k in range(len(self.members))]

    def evaluate_before(self) -> list[dict]:
        """eval_before's row for every member: the initial weights on the training split (in
        order, unaugmented) and on the validation split."""
        start = time.perf_counter()
        train = evaluate_members(self.net, self.member_batches.loaders[0].in_order(self.cfg.eval_batch_size), self.dtype)
        val = self.validate()
        seconds = (time.perf_counter() - start) / len(self.members)
        rows = []
        for k, lr in enumerate(self.lrs()):
            row = {"epoch": 0, **train.row(k, "train"), "lr": lr, "seconds": seconds, **val[k], "best_epoch": 0}
            row.pop("train_seconds")
            rows.append(row)
        return rows

    def snapshot(self, k: int) -> State:
        return self.net.snapshot(k)

    def step_log(self, window: Optional[list[float]]) -> NoStepLog:
        return NoStepLog()  # log_every runs train alone (members.config_problems)


def build_population(configs: Sequence[RunConfig | dict], data: Optional[ImageDataset] = None) -> Population:
    """K members, each starting exactly where its single run (pipeline.build) starts."""
    cfgs = [c if isinstance(c, RunConfig) else make_config(c) for c in configs]
    check_members(cfgs)
    cfg = cfgs[0]
    device = resolve_device(cfg.device)
    configure_threads(cfg.threads)
    set_determinism(cfg.deterministic, device)
    norm = run_normalization(cfg, data)
    data = data or load_data(cfg)
    nets, rngs = [], []
    for c in cfgs:  # each built under its own seed; nothing in training draws from the global RNG after
        nets.append(member_net(c, data))
        rngs.append(torch.get_rng_state())
    channels_last = use_channels_last(device, nets[0])
    stacked = StackedNet(nets)
    stacked = stacked.to(device, memory_format=torch.channels_last) if channels_last else stacked.to(device)
    args = dict(device=device, norm=norm, channels_last=channels_last)
    base = DeviceLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, augment=cfg.augment,
                        translate=cfg.translate, **args)
    val = DeviceLoader(data.test if cfg.validates_on_test else data.val, cfg.eval_batch_size, **args)
    optimizer = MemberOptimizer(list(stacked.parameters()), len(cfgs), cfg.optimizer, cfg.nesterov)
    return Population([Member(c, rng=r) for c, r in zip(cfgs, rngs)], data, norm, device, nets, stacked, optimizer,
                      MemberSchedules(cfgs, len(base)), MemberBatches(base, [c.seed for c in cfgs]), val,
                      autocast_dtype(cfg.precision, device, nets[0]))


def fit_population(pop: Population, should_stop: Callable[[], bool] = lambda: False,
                   on_row: Callable[[int], None] = lambda k: None,
                   on_checkpoint: Callable[[], None] = lambda: None) -> list[Outcome]:
    """Train every member to its end from where `pop` stands (a restored checkpoint: any epoch and
    step) with the loop every run trains with (loop.train); returns each member's Outcome.
    should_stop (polled after every step) ends the members still training with "interrupted".
    on_row(k) follows each row added to member k's history (its metrics.csv is written there);
    on_checkpoint() follows each epoch in which a member trained to its end, and an interruption:
    while `pop` can be saved and continued."""
    index = {id(member): k for k, member in enumerate(pop.members)}

    def row_added(run: RunProgress, row: dict) -> None:
        on_row(index[id(run)])

    outcomes = train(pop, Hooks(on_epoch_end=row_added, should_stop=should_stop, on_epoch_done=on_checkpoint))
    if any(outcome.status == "interrupted" for outcome in outcomes):
        on_checkpoint()  # the interrupted members are saved as still training (population.checkpoint)
    return outcomes
