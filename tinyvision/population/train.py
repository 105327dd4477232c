"""Train a population: K runs as one model, each member with its own seed, schedule, early stopping
and outcome.

build_population() makes each member's single model (members.member_net) and stacks them;
fit_population() runs the epochs. Per step: one forward and backward of the stacked model (loss:
each member's mean cross-entropy, summed, so gradients stay per member), one per-member optimiser
step. Per epoch: each member's metrics row, as loop.fit writes it, and its early-stopping
bookkeeping. A member that stops (early stopping, or a non-finite loss: `diverged`) keeps the
weights it stopped with (a copy) and gets lr 0; the others go on until every member has stopped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..config import RunConfig, make_config
from ..data import ImageDataset, load_data
from ..data.cached import run_normalization
from ..data.loader import DeviceLoader, Normalization
from ..loop import COMPLETED, INTERRUPTED, Outcome, RunProgress, end_epoch, restores_best
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
    batches: MemberBatches
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
    """Train every member to its end (cfg.epochs, early stopping or divergence) from where `pop`
    stands (a restored checkpoint: any epoch and step); returns each member's Outcome. should_stop
    (polled after every step) ends the members still training with "interrupted". on_row(k)
    follows each row added to member k's history (its metrics.csv is written there);
    on_checkpoint() follows each epoch and an interruption, while `pop` can be saved and continued."""
    if pop.cfg.eval_before and pop.epoch == 0 and pop.step == 0 and not pop.members[0].history:
        _epoch_zero(pop)
        for k in range(len(pop.members)):
            on_row(k)
    while pop.epoch < pop.cfg.epochs and any(m.active for m in pop.members):
        trained = _train_epoch(pop, should_stop)
        if trained is None:
            return _interrupt(pop, on_checkpoint)
        val = evaluate_members(pop.net, pop.val_loader, pop.dtype)
        pop.schedules.step(False, [m.active for m in pop.members])
        pop.epoch, pop.step = pop.epoch + 1, 0
        for k, member in enumerate(pop.members):
            if member.active and _end_epoch(pop, k, {"epoch": pop.epoch, **trained[k], **val.row(k, "val")}):
                on_row(k)
        if should_stop():  # a signal during validation: stop here, not a whole epoch later
            return _interrupt(pop, on_checkpoint)
        on_checkpoint()
    for k, member in enumerate(pop.members):
        if member.active:
            _stop(pop, k, COMPLETED)
    return [m.outcome for m in pop.members]  # type: ignore[misc]


def _interrupt(pop: Population, on_checkpoint: Callable[[], None]) -> list[Outcome]:
    """Checkpoint the population as it stands, then end its active members as interrupted."""
    on_checkpoint()
    for k, member in enumerate(pop.members):
        if member.active:
            _stop(pop, k, INTERRUPTED)
    return [m.outcome for m in pop.members]  # type: ignore[misc]


def _epoch_zero(pop: Population) -> None:
    """eval_before's row for every member: the initial weights on the training split (in order,
    unaugmented) and on the validation split."""
    start = time.perf_counter()
    train = evaluate_members(pop.net, pop.batches.loaders[0].in_order(pop.cfg.eval_batch_size), pop.dtype)
    val = evaluate_members(pop.net, pop.val_loader, pop.dtype)
    seconds = (time.perf_counter() - start) / len(pop.members)
    for k, (member, lr) in enumerate(zip(pop.members, pop.schedules.lrs())):
        member.history.append({"epoch": 0, **train.row(k, "train"), "lr": lr, "seconds": seconds,
                               **val.row(k, "val"), "best_epoch": 0})
        member.history[-1].pop("train_seconds")


def _train_epoch(pop: Population, should_stop: Callable[[], bool]) -> Optional[list[dict]]:
    """The rest of the current epoch (from pop.step) for every member: their metrics rows (train
    columns), or None when interrupted (pop.step and pop.partial then hold the epoch so far). A
    member whose training loss stops being finite is stopped as diverged at that step."""
    k_all, device = len(pop.members), pop.device
    partial = pop.partial or {"loss": [0.0] * k_all, "correct": [0.0] * k_all, "seen": 0, "seconds": 0.0,
                              "lr": pop.schedules.lrs(), "active": sum(m.active for m in pop.members)}
    loss_sum = torch.tensor(partial["loss"], dtype=torch.float64, device=device)  # floats: exact round trip
    correct = torch.tensor(partial["correct"], dtype=torch.float64, device=device)
    seen, lr_at_start, active_at_start = int(partial["seen"]), partial["lr"], partial["active"]
    check_every = 1 if device.type == "cpu" else 50  # a finiteness check is a host sync on a GPU
    smoothing = _smoothing(pop, device)
    start = time.perf_counter() - partial["seconds"]
    pop.net.train()
    pop.batches.set_epoch(pop.epoch, start_step=pop.step)
    active = [m.active for m in pop.members]
    for x, y in pop.batches:
        with autocast(device, pop.dtype):
            logits = pop.net(x, pop.batches.sizes)
        nll, loss = member_losses(logits.float(), y, smoothing)
        pop.optimizer.zero_grad()
        loss.sum().backward()
        pop.optimizer.step(pop.schedules.groups(), active)
        pop.schedules.step(True, active)
        with torch.no_grad():
            loss_sum.add_(nll, alpha=y.shape[-1])
            correct.add_((logits.argmax(dim=-1) == y).sum(dim=-1))
        seen, pop.step = seen + y.shape[-1], pop.step + 1
        if pop.step % check_every == 0 and _diverged(pop, loss_sum, seen, f"epoch {pop.epoch + 1}, step {pop.step}"):
            active = [m.active for m in pop.members]
        if should_stop():
            pop.partial = {"loss": loss_sum.tolist(), "correct": correct.tolist(), "seen": seen,
                           "seconds": time.perf_counter() - start, "lr": lr_at_start, "active": active_at_start}
            return None
    _diverged(pop, loss_sum, max(seen, 1), f"epoch {pop.epoch + 1}")
    pop.partial = None
    seconds = (time.perf_counter() - start) / max(active_at_start, 1)  # each member's share of the epoch
    acc = (correct / max(seen, 1)).tolist()
    return [{"train_loss": float(loss_sum[k]) / max(seen, 1), "train_accuracy": acc[k], "train_error": 1.0 - acc[k],
             "lr": lr_at_start[k], "seconds": seconds} for k in range(k_all)]


def _smoothing(pop: Population, device: torch.device) -> Optional[torch.Tensor]:
    """Each member's label smoothing as a [K] tensor; None when no member smooths."""
    values = [m.cfg.label_smoothing for m in pop.members]
    return torch.tensor(values, device=device) if any(values) else None


def _diverged(pop: Population, loss_sum: torch.Tensor, seen: int, where: str) -> bool:
    """Stop, as diverged, every active member whose summed training loss is not finite."""
    bad = (~torch.isfinite(loss_sum)).tolist()
    hit = [k for k, member in enumerate(pop.members) if member.active and bad[k]]
    for k in hit:
        _stop(pop, k, Outcome("diverged", f"training loss became {float(loss_sum[k]) / seen} at {where}"))
    return bool(hit)


def _end_epoch(pop: Population, k: int, row: dict) -> bool:
    """Member k's epoch bookkeeping (loop.end_epoch, as for a single run); whether it got a row."""
    member = pop.members[k]
    member.epoch = pop.epoch
    ending = end_epoch(member, row, member.cfg, lambda: pop.net.snapshot(k))
    if ending is not None:
        _stop(pop, k, ending)
        return False
    if member.stopped_early:
        _stop(pop, k, COMPLETED)
    return True


def _stop(pop: Population, k: int, outcome: Outcome) -> None:
    """Member k trains no more: it keeps its weights from here (its best ones when it completed and
    restores them); the optimiser steps it no more."""
    member = pop.members[k]
    member.outcome = outcome
    restore = outcome.status == "completed" and restores_best(member.cfg) and member.best_state is not None
    member.last_state = pop.net.snapshot(k)
    member.final_state = member.best_state if restore else member.last_state
