"""`auto` means measured: the precision, thread count and memory layout that train a given model
fastest on this machine, decided by timing a few training steps of each candidate.

A flag says what a CPU can do, not what is faster: bf16 autocast made LeNet 1.45x faster on an
AMD Zen 4 and 1.3x slower on an Intel Xeon with the same AVX512-BF16 flag. So for each setting
left at auto (`precision`, `threads`, `channels_last`), the run's own training step (its model,
batch size, optimiser and loss, on synthetic images of the dataset's shape) is timed under each
candidate, one setting at a time (threads, then precision, then layout, each with the ones
decided so far): a few warm-up steps, then rounds of timed steps with the candidates
alternating (a shared machine's load moves: each candidate sees the same moments), the median
per candidate; the default (every core, fp32, channels_last for convolutions) stays unless
another candidate is MARGIN faster. The choice and the
timings are cached per machine (CPU model, or GPU name), torch version and model signature in
the user cache folder (probe.json), so a model is measured once per machine; result.json
records them under "auto". A setting the user pins is never measured nor overridden.

The probe is off under TINYVISION_PROBE=0 (the test suite sets it: tests must not depend on one
CPU's speed): auto then means fp32 on a CPU (bf16 on a GPU with bf16 tensor cores), every core,
and channels_last for convolutions.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .config import RunConfig
from .files import atomic_write
from .runtime import configure_threads, cuda_ampere_or_later, has_conv

PROBE_VERSION = 2  # bump when what is timed changes: older cache entries are not used
WARMUP, ROUNDS, STEPS = 3, 3, 3  # per candidate: warm-up steps, then rounds of timed steps (LeNet: ~8 ms each)
MARGIN = 0.05  # another candidate replaces the default only when this much faster: a near tie is noise
Timer = Callable[[], float]


@dataclass
class Decision:
    """What auto resolved to for one run, and how it was decided."""

    precision: str  # "fp32" | "bf16" | "fp16": what autocast_dtype is given
    threads: int
    channels_last: Optional[bool]  # None: the rule, decided where the model is built (convolutions: yes)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # setting -> candidate -> ms/step
    measured: list[str] = field(default_factory=list)  # the settings timed (the others: `notes` say why not)
    notes: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    key: str = ""

    def record(self) -> dict[str, Any]:
        """result.json's "auto"."""
        return {"precision": self.precision, "threads": self.threads, "channels_last": self.channels_last,
                "measured": self.measured, "timings_ms": self.timings, "notes": self.notes, "cached": self.cached,
                "key": self.key}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Decision":
        layout = record["channels_last"]
        return cls(record["precision"], int(record["threads"]), None if layout is None else bool(layout),
                   dict(record.get("timings_ms") or {}), list(record.get("measured") or []),
                   dict(record.get("notes") or {}), True, str(record.get("key", "")))


def enabled() -> bool:
    return os.environ.get("TINYVISION_PROBE", "1") != "0"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def rule(cfg: RunConfig, device: torch.device) -> Decision:
    """What auto means without a measurement (and what a pinned setting is); the layout's rule is
    applied where the model is built (runtime.use_channels_last)."""
    if cfg.precision != "auto":
        precision = cfg.precision
    else:
        precision = "bf16" if device.type == "cuda" and cuda_ampere_or_later(device) else "fp32"
    return Decision(precision, cfg.threads or cores(), cfg.channels_last)


def machine() -> str:
    """What the cache is keyed by besides the model: the CPU's model name (or the GPU's)."""
    if torch.cuda.is_available():
        return f"gpu:{torch.cuda.get_device_name()}"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        name = ""
    import platform

    return f"cpu:{name or platform.processor() or platform.machine()}:{cores()} cores"


def signature(cfg: RunConfig, input_shape: tuple[int, ...], classes: int) -> str:
    """The parts of a run that decide its step's speed."""
    parts = {"model": cfg.model, "model_args": cfg.model_args, "overrides": cfg.model_overrides(),
             "shape": list(input_shape), "classes": classes, "batch": cfg.batch_size, "optimizer": cfg.optimizer,
             "loss": cfg.loss, "device": cfg.device}
    return json.dumps(parts, sort_keys=True, default=str)


def cache_path() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("TINYVISION_CACHE") or user_cache_dir("tinyvision")) / "probe.json"


def cache_key(cfg: RunConfig, input_shape: tuple[int, ...], classes: int) -> str:
    return f"v{PROBE_VERSION}|{machine()}|torch {torch.__version__}|{signature(cfg, input_shape, classes)}"


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, record: dict[str, Any]) -> None:
    entries = _read_cache()
    entries[key] = record
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_path(), json.dumps(entries, indent=1, sort_keys=True))
    except OSError:  # a read-only cache folder: measured again next time, nothing lost
        pass


# -- measuring ------------------------------------------------------------------------------------

def fastest(candidates: dict[str, Callable[[], None]], timer: Timer = time.perf_counter) -> tuple[str, dict[str, float]]:
    """The candidate whose step is fastest, and every one's milliseconds per step (the median of
    ROUNDS x STEPS timed steps, after WARMUP, the candidates alternating round by round). The first
    candidate is the default: another wins only when MARGIN faster. A candidate whose step raises
    is left out."""
    live: dict[str, Callable[[], None]] = {}
    for name, step in candidates.items():
        try:
            for _ in range(WARMUP):
                step()
        except Exception:  # noqa: BLE001 - a candidate this machine cannot run
            continue
        live[name] = step
    if not live:
        raise RuntimeError("no candidate ran")
    times: dict[str, list[float]] = {name: [] for name in live}
    for r in range(ROUNDS):
        for name in (list(live) if r % 2 == 0 else list(reversed(live))):
            for _ in range(STEPS):
                start = timer()
                live[name]()
                times[name].append(timer() - start)
    timings = {name: 1000 * statistics.median(t) for name, t in times.items()}
    default, best = next(iter(live)), min(timings, key=timings.__getitem__)
    return (best if timings[best] * (1 + MARGIN) < timings[default] else default), timings


def decide(cfg: RunConfig, source: Any, data: Any, device: torch.device,
           timer: Timer = time.perf_counter, use_cache: bool = True) -> Decision:
    """The run's settings left at auto, measured here (or read from the cache), the others as
    pinned. Leaves torch's thread count as decided."""
    decision = rule(cfg, device)
    pinned = {"threads": cfg.threads is not None, "precision": cfg.precision != "auto",
              "channels_last": cfg.channels_last is not None}
    decision.notes = {name: "pinned by the config" for name, on in pinned.items() if on}
    if device.type == "cuda" and not pinned["threads"]:
        decision.notes["threads"] = "the GPU computes: every core feeds it"
    open_settings = [name for name in pinned if name not in decision.notes]
    if not enabled():
        decision.notes.update({name: "the probe is off (TINYVISION_PROBE=0): the fixed rule" for name in open_settings})
        open_settings = []
    if open_settings and "channels_last" in open_settings:
        with torch.random.fork_rng():  # building draws initial weights: the run's own draws are later
            convolutional = has_conv(source.build(data.input_shape, data.num_classes, cfg.model_overrides()))
        if not convolutional:
            decision.notes["channels_last"] = "no convolution: nothing to lay out"
            open_settings.remove("channels_last")
    if not open_settings:
        configure_threads(decision.threads)
        return decision
    key = cache_key(cfg, data.input_shape, data.num_classes)
    cached = _read_cache().get(key) if use_cache else None
    if cached:
        found = Decision.from_record(cached)
        decision = Decision(found.precision if "precision" in open_settings else decision.precision,
                            found.threads if "threads" in open_settings else decision.threads,
                            found.channels_last if "channels_last" in open_settings else decision.channels_last,
                            {k: v for k, v in found.timings.items() if k in open_settings},
                            [m for m in found.measured if m in open_settings],  # a pinned one was not measured
                            {**found.notes, **decision.notes}, True, key)
        configure_threads(decision.threads)
        return decision
    decision = _measure(cfg, source, data, device, decision, open_settings, timer)
    decision.key = key
    _write_cache(key, decision.record())
    return decision


def _measure(cfg: RunConfig, source: Any, data: Any, device: torch.device, decision: Decision,
             settings: list[str], timer: Timer) -> Decision:
    """One setting at a time, each candidate timed with the settings decided so far."""
    candidates = {"threads": sorted({cores(), max(1, cores() // 2), 1}, reverse=True),  # the first: the default
                  "precision": ["fp32", "bf16"] if device.type == "cpu" or cuda_ampere_or_later(device)
                  else ["fp32", "fp16"],
                  "channels_last": [True, False]}
    for setting in settings:
        options = {str(value): _stepper(cfg, source, data, device, decision, setting, value)
                   for value in candidates[setting]}
        best, timings = fastest(options, timer)
        value = next(v for v in candidates[setting] if str(v) == best)
        setattr(decision, setting, value)
        decision.timings[setting] = timings
        decision.measured.append(setting)
    configure_threads(decision.threads)
    return decision


def _stepper(cfg: RunConfig, source: Any, data: Any, device: torch.device, decision: Decision,
             setting: str, value: Any) -> Callable[[], None]:
    """A function taking one training step of the run with `setting` = value (built on first call,
    so that building is not timed): the run's own step (training.single) on synthetic images."""
    state: dict[str, Any] = {}

    def step() -> None:
        if not state:
            configure_threads(value if setting == "threads" else decision.threads)
            members = value if setting == "population" else 1
            settings = {**_current(decision), **({} if setting == "population" else {setting: value})}
            state["trainee"] = _trainee(cfg, source, data, device, settings, members)
            state["batches"] = state["trainee"].batches()
        try:
            x, y = next(state["batches"])
        except StopIteration:
            state["batches"] = state["trainee"].batches()
            x, y = next(state["batches"])
        state["trainee"].train_step(x, y, [True] * len(state["trainee"].members))

    return step


def _current(decision: Decision) -> dict[str, Any]:
    return {"threads": decision.threads, "precision": decision.precision, "channels_last": decision.channels_last}


def _trainee(cfg: RunConfig, source: Any, data: Any, device: torch.device, settings: dict[str, Any],
             members: int = 1) -> Any:
    """A trainee of `members` runs (seeds 0, 1, ...) on 8 batches of synthetic images of the data's shape."""
    from .data.loader import Normalization
    from .data.splits import ImageDataset, Split
    from .training.build import build_trainee

    n = 8 * cfg.batch_size
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *data.input_shape), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, data.num_classes, (n,), generator=gen)
    split = Split(images, labels)
    fake = ImageDataset("probe", tuple(data.classes), split, Split(images[:1], labels[:1]), split, 255.0)
    norm = Normalization((127.5,) * data.input_shape[0], (73.6,) * data.input_shape[0])
    probe_cfg = cfg.model_copy(update={"precision": settings["precision"], "channels_last": settings["channels_last"],
                                       "threads": settings["threads"], "compile": False, "augment": "none"})
    with torch.random.fork_rng():
        return build_trainee([probe_cfg.model_copy(update={"seed": k}) for k in range(members)], source, fake, norm,
                             device)


# -- population size ------------------------------------------------------------------------------

POPULATION_PROBE = 4  # members in the measured population


def population_pays(cfg: RunConfig, shape: tuple[int, int, int, int], device: torch.device, convolutional: bool,
                    timer: Timer = time.perf_counter, use_cache: bool = True) -> bool:
    """Whether POPULATION_PROBE runs like `cfg` train faster stacked than one at a time here, per
    step of each (shape: C, H, W, classes). Cached as the other choices; without the probe the
    rule: on a CPU, convolutional models train one at a time."""
    if not enabled() or cfg.model.startswith("python:"):
        return not (device.type == "cpu" and convolutional)
    key = cache_key(cfg, shape[:3], shape[3]) + "|population"
    cached = _read_cache().get(key) if use_cache else None
    if cached:
        return bool(cached["pays"])
    from .models.source import resolve_model

    source = resolve_model(cfg.model, cfg.model_args)
    data = _shape_only(shape)
    alone = _stepper(cfg, source, data, device, rule(cfg, device), "population", 1)
    together = _stepper(cfg, source, data, device, rule(cfg, device), "population", POPULATION_PROBE)
    try:
        _, timings = fastest({"1": alone, str(POPULATION_PROBE): together}, timer)
    except RuntimeError:  # the population cannot be built (a module vmap cannot map)
        timings = {"1": 1.0}
    per_run = {"alone": timings["1"], "population": timings.get(str(POPULATION_PROBE), float("inf")) / POPULATION_PROBE}
    pays = per_run["population"] * (1 + MARGIN) < per_run["alone"]
    _write_cache(key, {"pays": pays, "ms_per_run_step": per_run})
    return pays


def _shape_only(shape: tuple[int, int, int, int]) -> Any:
    from types import SimpleNamespace

    c, h, w, classes = shape
    return SimpleNamespace(input_shape=(c, h, w), num_classes=classes, classes=tuple(map(str, range(classes))))
