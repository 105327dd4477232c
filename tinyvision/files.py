"""Files that hold tensors: safetensors plus JSON metadata, written atomically. Never pickle.

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
import math
import os
import secrets
from pathlib import Path
from typing import Any, Optional


import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import DataError, TinyVisionError

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


def _plain(value: Any) -> bool:
    """A value JSON stores as it is: None, bool, int, str or a finite float."""
    kind = type(value)
    return value is None or kind is int or kind is str or kind is bool or (kind is float and math.isfinite(value))


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Replace each tensor by a reference into `tensors`; keep the JSON-able rest."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(map(_plain, obj.keys())) and all(map(_plain, obj.values())):  # fast path: same output
            return {"__dict__": [[k, v] for k, v in obj.items()]}
        return {"__dict__": [[_flatten(k, tensors, f"{prefix}.k{i}"), _flatten(v, tensors, f"{prefix}.{i}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        if all(map(_plain, obj)):  # fast path (an RNG state, a metrics row): same output
            items = list(obj)
        else:
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
