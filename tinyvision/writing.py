"""Each run's directory as its runs train: metrics after every epoch, the checkpoint, and at the end
the weights, the test predictions and result.json (last: its status marks the directory complete).

One writer for one run and for a population: member k's directory gets exactly what run k alone
would write; result.json adds "population" (the members and this one's place) where there were
several. The population's checkpoint lives in the first member's directory; when it ends, each
completed member gets a checkpoint of its own (`train --resume` extends it alone).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from . import mistakes, runs
from .checkpoint import save_checkpoint, save_member_checkpoint
from .config import RunConfig
from .data import ImageDataset
from .data.loader import Normalization
from .evaluate import Predictions, metrics_record
from .files import save_weights
from .models.source import ModelSource
from .models.summary import summarize, summary_record
from .runtime import precision_name
from .training.build import test_loader
from .training.loop import restores_best
from .training.trainee import TraineeBase

WEIGHTS_FORMAT = runs.WEIGHTS_FORMAT


def member_names(run_dirs: Sequence[Optional[Path]]) -> list[str]:
    """The runs as a checkpoint names them: directories relative to the first one's parent's parent."""
    if run_dirs[0] is None:
        return [f"run{k}" for k in range(len(run_dirs))]
    base = Path(run_dirs[0]).resolve().parent.parent
    return [str(Path(d).resolve().relative_to(base)) if Path(d).resolve().is_relative_to(base)
            else str(Path(d).resolve()) for d in run_dirs]


class RunWriter:
    """Writes the directories of a trainee's members (None: a member this process does not write)."""

    def __init__(self, trainee: TraineeBase, source: ModelSource, data: ImageDataset,
                 dirs: Sequence[Optional[Path]], started: str) -> None:
        self.trainee, self.source, self.data = trainee, source, data
        self.norm = trainee.training_loader().norm
        self.dirs, self.started, self.clock = list(dirs), started, runs.Stopwatch()
        self.writes = [d is not None for d in self.dirs]  # False: written elsewhere, or final already
        self.names = member_names(self.dirs)

    @property
    def checkpoint(self) -> Optional[Path]:
        return self.dirs[0] / runs.CHECKPOINT if self.dirs[0] is not None else None

    def skip_finished(self) -> None:
        """After a restore: members that had ended keep their directories as they are."""
        for k, member in enumerate(self.trainee.members):
            if member.outcome is not None:
                self.writes[k] = False

    def begin(self) -> None:
        """metrics.csv and steps.csv as far as they go (on resume: rows past the checkpoint are
        redone), result.json "running", and the model's source file."""
        for k, run_dir in self._written():
            self._write_rows(k, run_dir)
            runs.write_result(run_dir, {"status": "running", "started": self.started,
                                        "auto": self.trainee.decision.record()})  # a resume keeps these
            self.source.write_copy(run_dir)

    def epoch_written(self) -> None:
        """After an epoch: every written member's rows, and the checkpoint while any run trains on."""
        for k, run_dir in self._written():
            self._write_rows(k, run_dir)
        if self.checkpoint is not None and any(m.outcome is None for m in self.trainee.members):
            save_checkpoint(self.checkpoint, self.trainee, self.names)

    def _written(self) -> list[tuple[int, Path]]:
        return [(k, d) for k, d in enumerate(self.dirs) if self.writes[k] and d is not None]

    def _write_rows(self, k: int, run_dir: Path) -> None:
        member = self.trainee.members[k]
        runs.write_metrics(run_dir, member.history, val_name=runs.val_name(member.cfg))
        runs.write_steps(run_dir, member.steps)

    # -- the end --------------------------------------------------------------------------------

    def finish(self) -> list[dict[str, Any]]:
        """Every member's files and result (a member not written here: its result.json as it is)."""
        trainee, members = self.trainee, self.trainee.members
        self._end_checkpoints()
        facts = self._facts()
        completed = [k for k, m in enumerate(members) if m.outcome.status == "completed" and self.writes[k]]
        preds = trainee.final_predict(test_loader(trainee, self.data), trainee.members[0].cfg.tta,
                                      trainee.members[0].cfg.flips) if completed else []
        shared = self.clock() / len(members)  # each member's share of building, training and testing
        results = []
        for k, member in enumerate(members):
            if not self.writes[k]:
                results.append({**(runs.read_result(self.dirs[k]) or {}), "skipped": True} if self.dirs[k]
                               else {"status": member.outcome.status})
                continue
            results.append(self._finish_member(k, preds[k] if k in completed else None, facts, shared))
            self.writes[k] = False  # final: a later failure leaves it as it is
        return results

    def _end_checkpoints(self) -> None:
        """Interrupted: the checkpoint holds every member (written at the stop). Else a population's
        goes, and each completed member keeps its own (one run: its checkpoint is that already)."""
        members = self.trainee.members
        if self.checkpoint is None:
            return
        if any(m.outcome.status == "interrupted" for m in members):
            save_checkpoint(self.checkpoint, self.trainee, self.names)
            return
        if len(members) > 1:
            self.checkpoint.unlink(missing_ok=True)
        for k, member in enumerate(members):
            if member.outcome.status == "completed" and self.writes[k]:
                save_member_checkpoint(self.dirs[k] / runs.CHECKPOINT, self.trainee, k, self.names[k])

    def _finish_member(self, k: int, pred: Optional[Predictions], facts: dict[str, Any],
                       shared_seconds: float) -> dict[str, Any]:
        clock, member, run_dir = runs.Stopwatch(), self.trainee.members[k], self.dirs[k]
        cfg = member.cfg
        result = runs.build_result(member.outcome, member, cfg=cfg, run_dir=run_dir, facts={
            **facts, "evaluated_weights": runs.evaluated_weights(member.best_epoch, member.epoch, restores_best(cfg))})
        result["started"] = self.started
        if len(self.trainee.members) > 1:
            result["population"] = {"members": len(self.trainee.members), "member": k,
                                    "seeds": [m.cfg.seed for m in self.trainee.members]}
            if member.outcome.status == "interrupted":
                result["reason"] = "stopped by a signal; run the experiment again to continue its population"
        self._save_weights(k)
        if pred is not None:
            result["test"] = summarize_test(pred, self.data.classes, top_k=cfg.top_k, bins=cfg.calibration_bins)
            runs.write_predictions(run_dir, pred, self.data.test.images, self.data.classes,
                                   grid_from=(self.data.train.images, self.data.train.labels))
            mistakes.write_test_mistakes(run_dir, pred, cfg, self.data.classes)  # folder datasets
        result.update(total_seconds=shared_seconds + clock(), finished=runs.now())
        runs.write_result(run_dir, result)  # last: its status marks the directory complete
        return result

    def _save_weights(self, k: int) -> None:
        """model.safetensors: a completed run's final weights, or a diverged one's best epoch's."""
        member = self.trainee.members[k]
        if member.outcome.status == "completed":
            state = self.trainee.member_state(k)
        elif member.outcome.status == "diverged" and member.best_state is not None:
            state = member.best_state
        else:
            return
        save_weights(self.dirs[k] / runs.WEIGHTS, state, weights_metadata(member.cfg, self.source, self.data,
                                                                           self.norm, self.trainee.template))

    def _facts(self) -> dict[str, Any]:
        """The result.json fields only the live runs know (their architecture is one)."""
        cfg, template, data = self.trainee.members[0].cfg, self.trainee.template, self.data
        summary = summarize(template, data.input_shape)
        return {"spec": getattr(template, "spec", cfg.model), "model_source": self.source.record(),
                "auto": self.trainee.decision.record(),
                "loss": cfg.loss, "params": summary.params, "macs": summary.macs,
                "device": str(self.trainee.device),
                "precision": precision_name(cfg.precision, self.trainee.device, template),
                "classes": list(data.classes), "layers": summary_record(summary),
                "validation": runs.validation_label(cfg, len(data.val)), "warnings": test_selection_warnings(cfg)}

    def failed(self, exc: BaseException) -> BaseException:
        """Out of room (disk, device memory): every member still written here marked failed; the
        error to raise (any other exception is returned as it is)."""
        errors = [runs.mark_failed(d, exc, self.started) for k, d in self._written()]
        return (errors or [runs.mark_failed(None, exc, self.started)])[0]


def weights_metadata(cfg: RunConfig, source: ModelSource, data: ImageDataset, norm: Normalization,
                     template: torch.nn.Module) -> dict[str, Any]:
    """What model.safetensors carries besides the weights: enough to rebuild and use the model."""
    return {"model": cfg.model, "spec": getattr(template, "spec", cfg.model), "source": source.record(),
            "overrides": cfg.model_overrides(), "input_shape": list(data.input_shape),
            "classes": list(data.classes), "num_classes": data.num_classes,
            "mean": list(norm.mean), "std": list(norm.std), "dataset": cfg.dataset,
            "pixel_max": data.pixel_max, "normalize": cfg.model_dump()["normalize"], "format": WEIGHTS_FORMAT}


def summarize_test(pred: Predictions, classes: tuple[str, ...], *, top_k: int = 5, bins: int = 15) -> dict[str, Any]:
    """result.json's "test": loss, accuracy, macro-F1, top-k accuracy, ECE and the reliability
    diagram's bins, per-class precision/recall/F1, confusion matrix (evaluate.metrics_record)."""
    return metrics_record(pred, classes, top_k=top_k, bins=bins)


def test_selection_warnings(cfg: RunConfig) -> list[str]:
    """What makes the test score optimistic: choices made by watching the test set (val_size=0)."""
    if not cfg.validates_on_test:
        return []
    chosen = [what for what, on in (("early stopping (patience)", cfg.patience is not None),
                                    ("the best epoch's weights (restore_best)", restores_best(cfg))) if on]
    return [f"val_size=0 validates on the test set, and {' and '.join(chosen)} is chosen by it: "
            "the test score is optimistic; hold out a validation split (val_size > 0) for an unbiased one"] \
        if chosen else []
