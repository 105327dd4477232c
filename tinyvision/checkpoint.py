"""A training checkpoint: everything needed to continue K >= 1 runs exactly where they stopped.

One format for one run and for a population: per member its plain state_dict, its optimiser and
schedule state as its own torch optimiser would hold them, its bookkeeping (history, best weights,
early stopping, how it ended); and once the loop's position (epoch, step, the part epoch's sums),
every random generator, and what fixes the training order. A run's checkpoint is the K = 1 case.
A population's lives in its first member's directory; when the population ends, each completed
member gets a checkpoint of its own there (`train --resume` extends it alone). Written atomically
(files.save_state) after every epoch and on a stop request: a kill leaves the previous one.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from .errors import DataError
from .files import load_state, one_line, save_state

if TYPE_CHECKING:
    from .training.loop import Member

FORMAT = "tinyvision-checkpoint-3"
_OLD_FORMAT = "tinyvision-checkpoint-2"  # one run's, before populations shared the format
_PROGRESS = ("epoch", "best_loss", "best_epoch", "best_state", "bad_epochs", "history", "steps", "stopped_early")
_COUNTERS = ("epoch", "best_epoch", "bad_epochs")


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every random generator a run may draw from (dropout uses torch's; the loader is seeded)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "numpy": [name, keys.tolist(), pos, has_gauss, gauss]}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def set_rng_state(rng: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    if "python" in rng:  # absent from checkpoints of earlier versions
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    if "numpy" in rng:
        name, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


def member_entry(member: "Member", record: dict[str, Any]) -> dict[str, Any]:
    """One member as a checkpoint holds it: its state (model, optimizer, scheduler) and bookkeeping."""
    final = None
    if member.final_state is not None:
        final = "best" if member.final_state is member.best_state else "last"
    outcome = [member.outcome.status, member.outcome.reason] if member.outcome is not None and \
        member.outcome.status != "interrupted" else None  # an interrupted member continues
    return {**record, **{key: getattr(member, key) for key in _PROGRESS}, "seed": member.cfg.seed,
            "outcome": outcome, "final": final}


def save_checkpoint(path: str | Path, trainee: Any, names: Sequence[str]) -> None:
    """Every member of `trainee` (names: their run directories) and the loop's position."""
    entries = []
    for k, member in enumerate(trainee.members):
        stopped = member.outcome is not None and member.outcome.status != "interrupted"
        entries.append(member_entry(member, member.record if stopped else trainee.member_record(k)))
    _write(path, names, entries, {"epoch": trainee.epoch, "step": trainee.step, "partial": trainee.partial},
           trainee.order(), trainee.device)


def save_member_checkpoint(path: str | Path, trainee: Any, k: int, name: str) -> None:
    """Member k alone, as the checkpoint of a run that ended with its last epoch (its record from
    when it stopped): `train --resume` extends it with more epochs."""
    member = trainee.members[k]
    entry = member_entry(member, member.record)
    entry["outcome"], entry["final"] = None, None  # extended from its last epoch's weights
    _write(path, [name], [entry], {"epoch": member.epoch, "step": 0, "partial": None}, trainee.order(),
           trainee.device)


def _write(path: str | Path, names: Sequence[str], entries: list[dict], position: dict[str, Any],
           order: dict[str, Any], device: torch.device) -> None:
    save_state(path, {"format": FORMAT, "members": list(names), "entries": entries, **position,
                      "order": order, "rng": rng_state(device)},
               labels={"format": FORMAT, "members": list(names)})  # rundir reads them without the tensors


def restore_checkpoint(path: str | Path, trainee: Any, names: Sequence[str]) -> None:
    """Continue `trainee` (built from its members' configs) from the checkpoint at `path`; a file
    written for other members, seeds, model or training order is a one-line DataError naming it.
    Tensors come back in their live counterparts' dtype, device and memory format."""
    path = Path(path)
    saved = _upgraded(load_state(path))
    try:
        _check(saved, trainee, names)
        trainee.load_records(saved["entries"])
        for member, entry in zip(trainee.members, saved["entries"], strict=True):
            _restore_member(member, entry)
        trainee.epoch, trainee.step, trainee.partial = saved["epoch"], saved["step"], saved["partial"]
        set_rng_state(saved["rng"], trainee.device)
    except Mismatch as exc:
        raise DataError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise DataError(f"{path}: not a checkpoint of this run ({one_line(exc)})") from None


class Mismatch(ValueError):
    """A checkpoint that is whole but written for other runs: its message says how."""


def _restore_member(member: "Member", entry: dict[str, Any]) -> None:
    from .training.loop import Outcome

    for key in _PROGRESS:
        setattr(member, key, entry[key])
    member.best_loss = float(member.best_loss)
    if entry["outcome"] is not None:
        member.outcome = Outcome(*entry["outcome"])
        member.record = {key: entry[key] for key in ("model", "optimizer", "scheduler", "scaler") if key in entry}
        member.final_state = {"best": member.best_state, "last": entry["model"]}.get(entry["final"] or "")


def _check(saved: Any, trainee: Any, names: Sequence[str]) -> None:
    found = saved.get("format") if isinstance(saved, dict) else None
    if isinstance(found, str) and found.startswith("tinyvision-checkpoint-") and found != FORMAT:
        raise Mismatch(f"a checkpoint in format {found[:60]}, written by another tinyvision version; this one "
                       f"reads {FORMAT} and {_OLD_FORMAT} (nothing was changed)")
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or not isinstance(saved.get("entries"), list):
        raise Mismatch("expected a tinyvision checkpoint (model, optimizer, epoch, step...)")
    members = trainee.members
    if len(saved["entries"]) != len(members):
        raise Mismatch(f"it holds {len(saved['entries'])} runs ({', '.join(saved['members'])}), not {len(members)}; "
                         "run the experiment again to continue a population")
    if len(members) > 1 and list(saved["members"]) != list(names):
        raise Mismatch(f"written for members {saved['members']}, not {list(names)}")
    for entry, member in zip(saved["entries"], members):
        if any(type(entry[k]) is not int or entry[k] < 0 for k in _COUNTERS):
            raise ValueError(f"expected non-negative integer {', '.join(_COUNTERS)}")
        if entry["seed"] is not None and entry["seed"] != member.cfg.seed:
            raise Mismatch(f"written for another training order (seed {entry['seed']}, now {member.cfg.seed}); "
                             "resume with the run's own config.yaml")
    order = trainee.order()
    changed = ", ".join(f"{k} {v}, now {order[k]}" for k, v in saved["order"].items() if k in order and v != order[k])
    if changed:
        raise Mismatch(f"written for another training order ({changed}); resume with the run's own config.yaml")
    if type(saved["step"]) is not int or not 0 <= saved["step"] <= trainee.steps_per_epoch():
        raise Mismatch(f"step {saved['step']} is beyond an epoch of {trainee.steps_per_epoch()} steps")
    shapes = trainee.state_shapes()
    for entry, member in zip(saved["entries"], members):
        for name in ("model", "best_state"):
            tensors = entry[name]
            if tensors is not None and {k: getattr(v, "shape", None) for k, v in tensors.items()} != shapes:
                raise Mismatch(f"its {name} weights do not fit model {member.cfg.model!r}")


def _upgraded(saved: Any) -> Any:
    """A single run's checkpoint of the previous format (tinyvision 0.2) in this one's form."""
    if not isinstance(saved, dict) or saved.get("format") != _OLD_FORMAT:
        return saved
    loader = saved.get("loader") or {}
    entry = {"model": saved["model"], "optimizer": saved["optimizer"], "scheduler": saved["scheduler"],
             **{key: saved.get(key, [] if key == "steps" else None) for key in _PROGRESS},
             "seed": loader.get("seed"), "outcome": None, "final": None}
    order = {k: loader[k] for k in ("batch_size", "samples", "world_size") if k in loader}
    if not isinstance(saved.get("model"), dict) or not isinstance(saved.get("history"), list):
        return saved  # not even the old format's shape: _check refuses it
    return {"format": FORMAT, "members": ["run"], "entries": [entry], "epoch": saved["epoch"], "step": saved["step"],
            "partial": saved.get("partial"), "order": order, "rng": saved["rng"]}
