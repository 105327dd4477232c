"""Files that hold tensors: safetensors plus JSON metadata, written atomically. Never pickle.
And what a run's checkpoint holds: the whole training state, restored exactly (layouts included).

`save_weights`/`load_weights` hold a trained model with what is needed to rebuild and use it
(spec, input shape, classes, normalisation). `save_state`/`load_state` hold any nested structure
of tensors, numbers and strings (a whole training state) by storing the tensors in safetensors
and the structure as JSON beside them. Each file carries a sha256 of its tensors, checked on load
(safetensors itself notices a cut file, not a flipped bit). Every failure to read is a one-line
DataError naming the file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import DataError, TinyVisionError
from .optim import match_state_layout

if TYPE_CHECKING:
    from torch import nn

    from .data.loader import DeviceLoader
    from .loop import TrainState

PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".ckpt", ".bin"}
TEMP_SUFFIX = ".tmp"  # atomic_write's temporary files: ".<name>.<random>.tmp" beside the target
CHECKSUM = "tinyvision_sha256"  # header metadata: sha256 over the tensors (catches flipped bits)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    A reader sees the old file or the new one, never half of one, even after a kill.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    # not mkstemp, whose files are 0600: created 0666, the umask decides who may read a run
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_temp_files(directory: str | Path) -> list[Path]:
    """Delete what atomic_writes killed mid-write left in `directory` (never a final file).

    Only call it where no other process is writing: the caller holds the directory's lock.
    """
    leftovers = [p for p in Path(directory).glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of the tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, st_save(tensors, metadata={**meta, CHECKSUM: _digest(tensors)}))


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    _write_safetensors(path, state_dict, {k: json.dumps(v) for k, v in metadata.items()})


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, the header's raw string metadata); a checksum written by us is verified."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        meta = dict(json.loads(raw[8 : 8 + header_len]).get("__metadata__") or {})
    except (SafetensorError, ValueError, UnicodeDecodeError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: expected a safetensors file, found something else ({one_line(exc)})") from None
    expected = meta.pop(CHECKSUM, None)
    if expected is not None and expected != _digest(tensors):
        raise DataError(f"{path}: damaged: its tensors do not match the checksum written with them")
    return tensors, meta


def load_weights(path: str | Path, *, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, metadata). Pickle-based files are refused unless trust_pickle is set, and
    even then are read with weights_only=True (no code runs), with empty metadata."""
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise TinyVisionError(f"{path}: refusing a pickle-based {path.suffix} file (it can run code); "
                                  "pass --trust-pickle to load its tensors with weights_only=True")
        try:  # from memory: the unpickler would allocate whatever a damaged length claims
            obj = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure is "not a tensor file"
            raise DataError(f"{path}: not a loadable weights-only file ({one_line(exc)})") from None
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise DataError(f"{path}: expected a dict of tensors (a state_dict)")
        return obj, {}
    tensors, raw_meta = _read_safetensors(path)
    try:
        return tensors, {k: json.loads(v) for k, v in raw_meta.items()}
    except json.JSONDecodeError:
        raise DataError(f"{path}: metadata is not tinyvision's JSON") from None


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Replace each tensor by a reference into `tensors`; keep the JSON-able rest."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, tensors, f"{prefix}.k{i}"), _flatten(v, tensors, f"{prefix}.{i}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, float) and not (obj == obj and abs(obj) != float("inf")):
        return {"__float__": repr(obj)}  # JSON has no NaN/inf
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a state file")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
        return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
    return obj


def save_state(path: str | Path, state: Any, labels: Optional[dict[str, Any]] = None) -> None:
    """Atomically store a nested structure of tensors and plain values (no pickle); `labels`, small
    JSON values, go in the header too, where read_labels finds them without reading the tensors."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, tensors, "s")
    header = {f"label.{k}": json.dumps(v) for k, v in (labels or {}).items()}
    _write_safetensors(path, tensors, {"structure": json.dumps(structure), **header})


def read_labels(path: str | Path) -> dict[str, Any]:
    """save_state's labels, read from the header alone ({} where the file has none or is no
    safetensors file; a damaged body is noticed by load_state)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size < 2**24 else {}
        meta = header.get("__metadata__") or {}
        return {k.removeprefix("label."): json.loads(v) for k, v in meta.items() if k.startswith("label.")}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def load_state(path: str | Path) -> Any:
    path = Path(path)
    tensors, raw_meta = _read_safetensors(path)
    try:
        structure = json.loads(raw_meta["structure"])
        return _unflatten(structure, tensors)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise DataError(f"{path}: expected a tinyvision state file, found other metadata "
                        f"({type(exc).__name__}: {one_line(exc)})") from None


def one_line(exc: BaseException) -> str:
    """A library exception as one short line (some have no message, some many lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


# -- a run's checkpoint: the whole training state ---------------------------------------------------

CHECKPOINT_FORMAT = "tinyvision-checkpoint-2"
_COUNTERS = ("epoch", "step", "best_epoch", "bad_epochs")  # non-negative ints of TrainState
_RESTORED = ("epoch", "step", "best_loss", "best_epoch", "best_state", "bad_epochs", "history",
             "stopped_early", "partial", "steps")  # TrainState fields saved as they are
_ADDED_LATER = {"steps": list}  # absent from checkpoints of earlier versions: restored as empty


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


def _loader_position(loader: "DeviceLoader", state: "TrainState") -> dict[str, Any]:
    """What fixes the training order: with epoch and step it is the loader's exact position."""
    return {"seed": loader.seed, "batch_size": loader.batch_size, "samples": len(loader.labels),
            "world_size": loader.world_size, "epoch": state.epoch, "step": state.step}


def save_checkpoint(path: str | Path, state: "TrainState", net: "nn.Module", loader: "DeviceLoader") -> None:
    """The whole training state (weights, optimiser, schedule, counters, history, every RNG and the
    loader's position), written atomically: a kill leaves the previous checkpoint."""
    saved = {"format": CHECKPOINT_FORMAT, "model": net.state_dict(), "optimizer": state.optimizer.state_dict(),
             "scheduler": state.scheduler.state_dict() if state.scheduler else None,
             **{key: getattr(state, key) for key in _RESTORED},
             "rng": rng_state(loader.device), "loader": _loader_position(loader, state)}
    save_state(path, saved)


def restore_checkpoint(path: str | Path, state: "TrainState", net: "nn.Module", loader: "DeviceLoader",
                       model_name: str) -> None:
    """Continue from the checkpoint at `path`; a file that does not fit this run is a DataError.

    Tensors come back in their live counterparts' dtype, device and memory format: weights are
    copied into the (channels_last) parameters, optimiser state is given its parameter's strides.
    """
    path = Path(path)
    saved = load_state(path)
    try:
        _check_checkpoint(saved, path, state, net, loader, model_name)
        _restore(saved, state, net, loader.device)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise DataError(f"{path}: not a checkpoint of this run ({one_line(exc)})") from None


def _check_checkpoint(saved: Any, path: Path, state: "TrainState", net: "nn.Module", loader: "DeviceLoader",
                      model_name: str) -> None:
    """Types, counters and the loader's order: refuse a checkpoint this config cannot continue."""
    if not (isinstance(saved, dict) and isinstance(saved.get("model"), dict)
            and isinstance(saved.get("history"), list)):
        raise DataError(f"{path}: expected a tinyvision checkpoint (model, optimizer, epoch, step...)")
    if any(type(saved[k]) is not int or saved[k] < 0 for k in _COUNTERS):
        raise DataError(f"{path}: expected non-negative integer {', '.join(_COUNTERS)}")
    if saved["step"] > len(loader):
        raise DataError(f"{path}: step {saved['step']} is beyond an epoch of {len(loader)} steps")
    written = saved.get("loader")  # absent from checkpoints of earlier versions
    if written is not None:
        now = _loader_position(loader, state)
        changed = ", ".join(f"{k} {written.get(k)}, now {now[k]}" for k in ("seed", "batch_size", "samples",
                                                                          "world_size") if written.get(k) != now[k])
        if changed:
            raise DataError(f"{path}: written for another training order ({changed}); "
                            "resume with the run's own config.yaml")
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    for name in ("model", "best_state"):
        tensors = saved[name]
        if tensors is not None and {k: getattr(v, "shape", None) for k, v in tensors.items()} != shapes:
            raise DataError(f"{path}: its {name} weights do not fit model {model_name!r}")


def _restore(saved: dict[str, Any], state: "TrainState", net: "nn.Module", device: torch.device) -> None:
    net.load_state_dict(saved["model"])  # copies into the live parameters: their layout stays
    state.optimizer.load_state_dict(saved["optimizer"])
    match_state_layout(state.optimizer)  # build_optimizer's load hook does it too; any optimizer here
    if state.scheduler is not None and saved["scheduler"] is not None:
        state.scheduler.load_state_dict(saved["scheduler"])
    for key in _RESTORED:
        setattr(state, key, saved[key] if key in saved or key not in _ADDED_LATER else _ADDED_LATER[key]())
    state.best_loss = float(state.best_loss)
    set_rng_state(saved["rng"], device)
