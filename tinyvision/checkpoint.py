"""Files that hold tensors: safetensors plus JSON metadata, written atomically. Never pickle.

`save_weights`/`load_weights` hold a trained model with what is needed to rebuild and use it
(spec, input shape, classes, normalisation). `save_state`/`load_state` hold any nested structure
of tensors, numbers and strings (a whole training state) by storing the tensors in safetensors
and the structure as JSON beside them.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import DataError, TinyVisionError

PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".ckpt", ".bin"}


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    A reader sees the old file or the new one, never half of one, even after a kill.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    atomic_write(path, st_save(tensors, metadata=meta))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, the header's raw string metadata)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
        meta = dict(header.get("__metadata__", {}))
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a valid safetensors file ({str(exc).splitlines()[0]})") from None
    return tensors, meta


def load_weights(path: str | Path, *, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, metadata). Pickle-based files are refused unless trust_pickle is set, and
    even then are read with weights_only=True (no code runs), with empty metadata."""
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise TinyVisionError(f"{path}: refusing a pickle-based {path.suffix} file (it can run code); "
                                  "pass --trust-pickle to load its tensors with weights_only=True")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure is "not a tensor file"
            raise DataError(f"{path}: not a loadable weights-only file ({str(exc).splitlines()[0]})") from None
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


def save_state(path: str | Path, state: Any) -> None:
    """Atomically store a nested structure of tensors and plain values (no pickle)."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, tensors, "s")
    atomic_write(path, st_save(tensors, metadata={"structure": json.dumps(structure)}))


def load_state(path: str | Path) -> Any:
    path = Path(path)
    tensors, raw_meta = _read_safetensors(path)
    try:
        structure = json.loads(raw_meta["structure"])
        return _unflatten(structure, tensors)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a tinyvision state file ({exc})") from None
