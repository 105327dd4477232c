"""A population's members written as runs: each member's directory gets what pipeline.train writes
for that run alone (config.yaml, metrics.csv after every epoch, result.json, model.safetensors,
predictions.safetensors, and for a completed member the checkpoint of its last epoch), so
evaluate, predict, report, the experiment tables and `train --resume` read it like any run.
result.json adds "population": the members and this one's place among them. While it trains, the
whole population is checkpointed after every epoch and on a stop signal (population.checkpoint,
in the first member's directory); train_members(resume=True) continues it from there, bit for
bit, and the file goes once every member's directory is written.
"""
from __future__ import annotations

import copy
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .. import pipeline, runs
from ..checkpoint import save_checkpoint
from ..config import RunConfig
from ..data import ImageDataset
from ..loop import Outcome, TrainState
from ..optim import build_optimizer
from ..runtime import graceful_stop
from .checkpoint import FILE, restore_population, save_population, saved_members
from .train import Population, build_population, fit_population


def checkpoint_path(run_dirs: Sequence[str | Path]) -> Path:
    """Where the population of these run directories keeps its checkpoint: in the first one."""
    return Path(run_dirs[0]) / FILE


def resumable(run_dirs: Sequence[str | Path]) -> bool:
    """Whether these run directories hold a checkpoint of exactly this population."""
    path = checkpoint_path(run_dirs)
    return path.exists() and saved_members(path) == member_names(run_dirs)


def member_names(run_dirs: Sequence[str | Path]) -> list[str]:
    """The members as a checkpoint names them: run directories relative to the first one's parent's parent."""
    base = Path(run_dirs[0]).resolve().parent.parent
    return [str(Path(d).resolve().relative_to(base)) if Path(d).resolve().is_relative_to(base)
            else str(Path(d).resolve()) for d in run_dirs]


def train_members(cfgs: Sequence[RunConfig], run_dirs: Sequence[str | Path], *,
                  data: Optional[ImageDataset] = None, resume: bool = False,
                  written: Optional[Sequence[bool]] = None) -> list[dict[str, Any]]:
    """Train the runs `cfgs` as one population, each into its run directory (new ones, claimed as
    pipeline.train claims them, and locked while written; resume=True: continued from the
    population's checkpoint); returns each run's result. written[k] false: member k trains (the
    others depend on nothing of it, but the checkpoint holds it) and its directory is left alone
    (its result there is final already)."""
    clock, started = runs.Stopwatch(), runs.now()
    written = list(written) if written is not None else [True] * len(cfgs)
    names, ckpt = member_names(run_dirs), checkpoint_path(run_dirs)
    with graceful_stop() as stop, ExitStack() as held:
        pop = build_population(cfgs, data)
        dirs = [runs.open_run_dir(d, "runs", cfg, resume=resume, held=held) if w else Path(d)
                for d, cfg, w in zip(run_dirs, cfgs, written)]
        if resume:
            restore_population(ckpt, pop, names)
        try:
            for k, run_dir in enumerate(dirs):
                if written[k]:  # on resume: rows past the checkpoint are redone
                    _write_metrics(pop, k, run_dir)
                    runs.write_result(run_dir, {"status": "running", "started": started})
            outcomes = fit_population(pop, should_stop=stop,
                                      on_row=lambda k: written[k] and _write_metrics(pop, k, dirs[k]),
                                      on_checkpoint=lambda: save_population(ckpt, pop, names))
            shared = clock() / len(cfgs)  # each member's share of building and training the population
            results: list[dict[str, Any]] = []
            for k, outcome in enumerate(outcomes):
                results.append(_write_member(pop, k, outcome, dirs[k], started, shared) if written[k]
                               else {**(runs.read_result(dirs[k]) or {}), "skipped": True})
                written[k] = False  # final: a later failure leaves it as it is
            if not any(outcome.status == "interrupted" for outcome in outcomes):
                ckpt.unlink(missing_ok=True)  # every member's directory is complete
            return results
        except (OSError, torch.OutOfMemoryError) as exc:
            errors = [runs.mark_failed(d, exc, started) for d, w in zip(dirs, written) if w]
            raise (errors or [runs.mark_failed(None, exc, started)])[0] from None


def _write_metrics(pop: Population, k: int, run_dir: Path) -> None:
    cfg = pop.members[k].cfg
    runs.write_metrics(run_dir, pop.members[k].history, val_name=runs.val_name(cfg))


def member_setup(pop: Population, k: int) -> pipeline.Setup:
    """Member k as the live objects of its single run (pipeline.Setup): its own model with the
    weights it ended with, on the device in the run's layout, and its bookkeeping as a TrainState
    (no optimiser: nothing trains it from here)."""
    member, loader = pop.members[k], pop.member_batches.loaders[k]
    net = pop.member_model(k)
    layout = torch.channels_last if loader.channels_last else torch.contiguous_format
    net = net.to(pop.device, memory_format=layout)
    state = TrainState(net, None, None, **member.progress())  # type: ignore[arg-type]
    return pipeline.Setup(member.cfg, pop.data, pop.norm, pop.device, net, state, loader, pop.val_loader)


def single_names(pop: Population) -> list[str]:
    """The stacked parameters' names as the single model calls them ("layers.bn1.norm.weight" -> "bn1.weight")."""
    return [name.removeprefix("layers.").replace(".norm.", ".") for name, _ in pop.net.named_parameters()]


def save_member_checkpoint(pop: Population, k: int, setup: pipeline.Setup, path: Path) -> None:
    """checkpoint.safetensors as a completed single run leaves it (its last epoch: weights, optimiser
    and schedule state, counters, history, RNG, loader position), so `tinyvision train --resume`
    can extend the member alone. Skipped where the optimiser state is not per member (no kernels)."""
    member = pop.members[k]
    states = pop.optimizer.member_state(k, pop.schedules.groups()[k])
    if states is None or member.last_state is None or member.rng is None:
        return
    net = copy.deepcopy(setup.net)
    net.load_state_dict(member.last_state)
    names = [name for name, _ in net.named_parameters()]
    if names != single_names(pop):
        raise RuntimeError(f"stacked parameters {single_names(pop)} do not map onto the model's {names}")
    optimizer = build_optimizer(net, member.cfg, fused=pop.device.type == "cuda")
    group = {key: value for key, value in pop.schedules.groups()[k].items() if key != "params"}
    shapes = [p.shape for p in net.parameters()]  # a dense layer's slice is [1, out, in]: as [out, in]
    states = [{key: v.reshape(shape) if v.dim() else v for key, v in s.items()} for s, shape in zip(states, shapes)]
    optimizer.load_state_dict({"state": {i: s for i, s in enumerate(states) if s},
                               "param_groups": [{**group, "params": list(range(len(names)))}]})
    state = TrainState(net, optimizer, pop.schedules.schedulers[k], **member.progress())
    devices = [pop.device.index or 0] if pop.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(member.cfg.seed)  # the CUDA generators as its run seeded them (never drawn from)
        torch.set_rng_state(member.rng)
        save_checkpoint(path, state, net, pop.member_batches.loaders[k])


def _write_member(pop: Population, k: int, outcome: Outcome, run_dir: Path, started: str,
                  shared_seconds: float) -> dict[str, Any]:
    """Member k's files as pipeline.train writes them: weights, test predictions, result.json last."""
    clock, setup = runs.Stopwatch(), member_setup(pop, k)
    result = runs.build_result(outcome, setup.state, cfg=setup.cfg, run_dir=run_dir, facts=pipeline.run_facts(setup))
    result["started"] = started
    result["population"] = {"members": len(pop.members), "member": k,
                            "seeds": [m.cfg.seed for m in pop.members], "shared_batches": pop.member_batches.shared}
    if outcome.status == "interrupted":  # the population's checkpoint holds it
        result["reason"] = "stopped by a signal; run the experiment again to continue its population"
    else:
        if outcome.status == "completed":
            save_member_checkpoint(pop, k, setup, run_dir / runs.CHECKPOINT)
        pipeline.finish_run(setup, outcome, result, run_dir)
    result.update(total_seconds=shared_seconds + clock(), finished=runs.now())
    runs.write_result(run_dir, result)
    return result
