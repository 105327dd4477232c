"""What may change when a run is resumed: where the data is, how many threads run, and more
epochs where the schedule does not depend on their number. Anything else is refused, naming it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import RunConfig, check_fields, make_config
from .errors import ConfigError
from .yamlfile import clip

# fields that may change when a run is resumed: where the data is and how many threads run; and
# epochs may grow where the schedule's state does not depend on the number of epochs
RESUME_MAY_CHANGE = ("data_dir", "threads")
_EPOCH_FREE_SCHEDULES = ("none", "exponential", "step", "plateau")


def resume_config(saved: RunConfig, requested: dict[str, Any], run: str | Path = "RUN") -> RunConfig:
    """The config to resume a run with: `saved` (its config.yaml) with `requested` applied where
    that cannot change what the checkpoint holds (RESUME_MAY_CHANGE, and more epochs for a
    schedule that does not depend on them); anything else is a ConfigError naming each change."""
    if not requested:
        return saved
    check_fields(requested)
    new = make_config({**saved.model_dump(), **requested})
    changed = [k for k in RunConfig.model_fields if getattr(new, k) != getattr(saved, k)]
    refused = [k for k in changed if k not in RESUME_MAY_CHANGE and k != "epochs"]
    why = ""
    if "epochs" in changed and new.epochs < saved.epochs:
        refused, why = ["epochs", *refused], "; epochs may only grow"
    elif "epochs" in changed and saved.schedule not in _EPOCH_FREE_SCHEDULES:
        refused, why = ["epochs", *refused], f"; schedule {saved.schedule} is fixed to {saved.epochs} epochs"
    if refused:
        listed = ", ".join(f"{k} {clip(getattr(saved, k), 40)} -> {clip(getattr(new, k), 40)}" for k in refused)
        raise ConfigError(f"--resume continues {run} with its own config; cannot change {listed}{why} "
                          f"(allowed: more epochs, {', '.join(RESUME_MAY_CHANGE)}); start a new run with "
                          f"--config {Path(run) / 'config.yaml'} and the new values instead")
    return new
