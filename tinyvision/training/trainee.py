"""What both ways of stepping runs share (training.single: one module; training.stacked: K modules
as one): the members' bookkeeping, how a member stops, and what a checkpoint asks of a trainee."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..data.loader import DeviceLoader
from .loop import Member, Outcome, State, restores_best
from .losses import Loss


class TraineeBase:
    """K >= 1 runs and the loop's position; subclasses give the model, optimiser and evaluation."""

    def __init__(self, members: Sequence[Member], device: torch.device, loss: Loss,
                 dtype: Optional[torch.dtype]) -> None:
        self.members, self.device, self.loss, self.dtype = list(members), device, loss, dtype
        self.epoch, self.step = 0, 0  # epochs completed; steps of the current one
        self.partial: Optional[dict[str, Any]] = None  # the current epoch's sums so far (a stop mid-epoch)
        self.decision: Any = None  # what auto resolved to (probe.Decision), set by pipeline.prepare

    # what subclasses give
    def member_record(self, k: int) -> dict[str, Any]:  # model, optimizer, scheduler (checkpoint.py)
        raise NotImplementedError

    def training_loader(self) -> DeviceLoader:  # the first member's training loader (its order)
        raise NotImplementedError

    def _stopped(self, k: int, restored: bool) -> None:
        """Member k stopped; `restored`: its best weights are its final ones."""

    def stop(self, k: int, outcome: Outcome) -> None:
        """Member k trains no more: its state now is its checkpoint record; its final weights are
        its best ones where it completed and restores them, else the ones it has now."""
        member = self.members[k]
        member.outcome = outcome
        member.record = self.member_record(k)
        restore = outcome.status == "completed" and restores_best(member.cfg) and member.best_state is not None
        member.final_state = member.best_state if restore else member.record["model"]
        self._stopped(k, restore)

    def order(self) -> dict[str, int]:
        """What fixes the training order besides the seeds (a checkpoint must match it)."""
        loader = self.training_loader()
        return {"batch_size": loader.batch_size, "samples": len(loader.labels), "world_size": loader.world_size}

    def steps_per_epoch(self) -> int:
        return len(self.training_loader())

    def outcomes(self) -> list[Outcome]:
        return [m.outcome for m in self.members]  # type: ignore[misc]

    @staticmethod
    def clone_state(state: dict[str, torch.Tensor]) -> State:
        """A contiguous copy of a state dict (the layout a saved model has)."""
        return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in state.items()}
