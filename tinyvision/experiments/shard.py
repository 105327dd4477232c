"""Shards (--shard I/N): N processes, on one machine or many sharing a file system, each run a
disjoint slice of an experiment's runs into the same experiment directory. The directory is
prepared under a lock (same experiment.yaml and manifest.json from every shard); the tables are
written by the shard that finds every run finished, or later by a plain `run`, which skips every
finished run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

from ..errors import ConfigError
from .groups import RunJob


class Shard(NamedTuple):
    """The index-th (0-based) of `count` disjoint slices of an experiment's runs."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """"I/N" with 0 <= I < N (0-based, as `--array=0-$((N-1))` gives Slurm's task ids)."""
        head, sep, tail = text.partition("/")
        try:
            index, count = int(head), int(tail)
        except ValueError:
            index = count = -1
        if not sep or count < 1 or not 0 <= index < count:
            raise ConfigError(f"--shard {text[:40]!r}: expected I/N with N >= 1 and I from 0 to N-1 "
                              "(0-based: 0/3, 1/3 and 2/3 split the runs in three)")
        return cls(index, count)

    def select(self, jobs: Sequence[RunJob]) -> list[RunJob]:
        """Every count-th run from the index-th: each shard gets runs of every point, so shards of an
        experiment whose points cost different amounts take about the same time."""
        return list(jobs[self.index::self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class ShardOutcome:
    """What one shard did, and whether the experiment is finished: `table` is None while runs of
    other shards are not (then no table was written)."""

    exp_dir: Path
    shard: Shard
    results: list[dict[str, Any]]  # this shard's runs, in order
    finished: int  # runs of the whole experiment that are finished (completed or diverged)
    total: int
    rows: list[dict[str, Any]]
    table: Optional[str]

    def waiting_line(self) -> str:
        return (f"shard {self.shard}: {len(self.results)} run(s) here; {self.finished} of {self.total} runs "
                f"finished; run without --shard to merge")
