"""A population's checkpoint: the whole population's training state in one file, restored exactly.

It holds what each member's single-run checkpoint holds (weights, optimiser state, schedule,
counters, history, best weights, RNG) for every member at once: the stacked weights and optimiser
buffers, each member's schedule and bookkeeping (a stopped member's outcome and kept weights too),
the population's epoch and step with the part epoch's sums, and the run directories it was
written for. Written atomically after every epoch and on a stop signal (checkpoint.save_state), so
a population killed at any moment continues from its last checkpoint to bit-identical results.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..checkpoint import load_state, one_line, read_labels, rng_state, save_state, set_rng_state
from ..errors import DataError
from ..loop import Outcome
from ..runs import POPULATION_CHECKPOINT as FILE  # in the first member's run directory
from .train import Member, Population

FORMAT = "tinyvision-population-checkpoint-1"
_MEMBER_FIELDS = ("epoch", "best_loss", "best_epoch", "best_state", "bad_epochs", "stopped_early", "history",
                  "last_state", "rng")  # Member fields saved as they are (final_state is one of the states)


def save_population(path: str | Path, pop: Population, names: Sequence[str]) -> None:
    """Atomically write `pop`'s whole training state; names: its members' run directories."""
    save_state(path, {
        "format": FORMAT, "members": list(names), "seeds": [m.cfg.seed for m in pop.members],
        "net": pop.net.state_dict(), "epoch": pop.epoch, "step": pop.step, "partial": pop.partial,
        "loader": _order(pop),
        "optimizer": pop.optimizer.state_dict(), "schedules": pop.schedules.state_dict(),
        "member_states": [_member_record(m) for m in pop.members], "rng": rng_state(pop.device)},
        labels={"format": FORMAT, "members": list(names)})  # saved_members reads them alone


def _order(pop: Population) -> dict[str, int]:
    """What fixes the members' training order besides their seeds (as a run's checkpoint has it)."""
    loader = pop.member_batches.loaders[0]
    return {"batch_size": loader.batch_size, "samples": len(loader.labels)}


def _member_record(member: Member) -> dict[str, Any]:
    if member.outcome is None or member.outcome.status == "interrupted":  # still training: it continues
        return {**{key: getattr(member, key) for key in _MEMBER_FIELDS}, "last_state": None, "outcome": None,
                "final": None}
    outcome = [member.outcome.status, member.outcome.reason]
    final = next((key for key in ("best_state", "last_state") if member.final_state is getattr(member, key)), None)
    if member.final_state is not None and final is None:
        raise ValueError("a member's final weights are neither its best nor its last ones")
    return {**{key: getattr(member, key) for key in _MEMBER_FIELDS}, "outcome": outcome, "final": final}


def saved_members(path: str | Path) -> list[str]:
    """The run directories a population checkpoint was written for ([] if none can be read): from
    its header, without reading its tensors (the planner asks for every checkpoint it finds)."""
    labels = read_labels(path)
    return list(labels.get("members") or []) if labels.get("format") == FORMAT else []


def restore_population(path: str | Path, pop: Population, names: Sequence[str]) -> None:
    """Continue `pop` (built from its members' configs) from the checkpoint at `path`; a file
    written for other members, seeds or model is a one-line DataError naming it."""
    path = Path(path)
    saved = load_state(path)
    try:
        _check(saved, pop, names)
        _restore(saved, pop)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise DataError(f"{path}: not a checkpoint of this population ({one_line(exc)})") from None


def _check(saved: Any, pop: Population, names: Sequence[str]) -> None:
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"expected format {FORMAT}")
    if saved["members"] != list(names):
        raise ValueError(f"written for members {saved['members']}, not {list(names)}")
    if saved["seeds"] != [m.cfg.seed for m in pop.members]:
        raise ValueError(f"written for seeds {saved['seeds']}")
    if saved["loader"] != _order(pop):
        raise ValueError(f"written for another training order ({saved['loader']}, now {_order(pop)})")
    if not 0 <= saved["step"] <= len(pop.member_batches):
        raise ValueError(f"step {saved['step']} is beyond an epoch of {len(pop.member_batches)} steps")
    shapes = {k: v.shape for k, v in pop.net.state_dict().items()}
    if {k: v.shape for k, v in saved["net"].items()} != shapes:
        raise ValueError("its weights do not fit this model")


def _restore(saved: dict[str, Any], pop: Population) -> None:
    pop.net.load_state_dict(saved["net"])  # copied into the live (channels_last) tensors
    pop.optimizer.load_state_dict(saved["optimizer"])
    pop.schedules.load_state_dict(saved["schedules"])
    for member, record in zip(pop.members, saved["member_states"], strict=True):
        for key in _MEMBER_FIELDS:
            setattr(member, key, record[key])
        member.best_loss = float(member.best_loss)
        member.outcome = Outcome(*record["outcome"]) if record["outcome"] else None
        member.final_state = getattr(member, record["final"]) if record["final"] else None
    pop.epoch, pop.step, pop.partial = saved["epoch"], saved["step"], saved["partial"]
    set_rng_state(saved["rng"], pop.device)
