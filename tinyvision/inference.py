"""Use a finished run: rebuild its model from model.safetensors, evaluate it, classify images."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from . import runs
from .checkpoint import load_weights
from .data import formats
from .data.loader import DeviceLoader, Normalization
from .errors import ConfigError, DataError, SpecError, TinyVisionError, UnknownNameError
from .evaluate import class_report, predict_loader, split_metrics
from .models import create_model
from .pipeline import load_data
from .runtime import resolve_device

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class LoadedModel:
    model: nn.Module  # eval mode, on CPU
    meta: dict[str, Any]  # spec, classes, input_shape, mean, std, ...

    @property
    def norm(self) -> Normalization:
        return Normalization(tuple(self.meta["mean"]), tuple(self.meta["std"]))


def load_model(path: str | Path, *, trust_pickle: bool = False) -> LoadedModel:
    """A run directory or a weights file -> the model with its metadata."""
    path = Path(path)
    weights = path / runs.WEIGHTS if path.is_dir() else path
    if path.is_dir() and not weights.exists():
        status = (runs.read_result(path) or {}).get("status", "no result")
        raise DataError(f"{path}: no {runs.WEIGHTS} (run status: {status})")
    state, meta = load_weights(weights, trust_pickle=trust_pickle)
    if "spec" not in meta:
        raise DataError(f"{weights}: no tinyvision metadata (spec, classes, input shape)")
    spec, shape, classes = _check_meta(meta, weights)
    try:
        with torch.device("meta"):  # shapes only: a damaged spec or shape cannot make us allocate
            expected = {k: v.shape for k, v in create_model(spec, shape, classes).state_dict().items()}
    except (SpecError, UnknownNameError, ConfigError) as exc:
        raise DataError(f"{weights}: its metadata names a model that cannot be built: {exc}") from None
    found = {k: v.shape for k, v in state.items()}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) or [k for k in expected if found[k] != expected[k]]
        raise DataError(f"{weights}: weights do not fit spec {spec!r} for input {list(shape)} "
                        f"({', '.join(wrong[:3])} differ)")
    model = create_model(spec, shape, classes)
    model.load_state_dict(state)
    return LoadedModel(model.eval(), meta)


def _check_meta(meta: dict[str, Any], weights: Path) -> tuple[str, tuple[int, int, int], int]:
    """(spec, input shape, class count) from metadata that says what it should."""
    def numbers(key: str, n: int) -> bool:
        v = meta.get(key)
        return isinstance(v, list) and len(v) == n and all(isinstance(x, (int, float)) for x in v)

    shape, n, classes = meta.get("input_shape"), meta.get("num_classes"), meta.get("classes")
    ok = (isinstance(meta["spec"], str) and isinstance(shape, list) and len(shape) == 3
          and all(type(d) is int and 1 <= d <= 4096 for d in shape) and type(n) is int and n >= 1
          and isinstance(classes, list) and len(classes) == n and all(isinstance(c, str) for c in classes)
          and numbers("mean", shape[0]) and numbers("std", shape[0]) and all(x > 0 for x in meta["std"])
          and isinstance(meta.get("pixel_max", 255), (int, float)))
    if not ok:
        raise DataError(f"{weights}: expected tinyvision metadata (spec, input_shape [C, H, W], num_classes, "
                        "classes, mean and std per channel), found it damaged or incomplete")
    return meta["spec"], tuple(shape), n


def evaluate_run(run_dir: str | Path, split: str = "test", *, data_dir: str | None = None,
                 device: str = "auto") -> dict[str, Any]:
    """Re-evaluate a saved model on one split of its dataset."""
    cfg = runs.read_config(run_dir)
    if data_dir:
        cfg = cfg.model_copy(update={"data_dir": data_dir})
    loaded = load_model(run_dir)
    data = load_data(cfg)
    if split not in ("train", "val", "test"):
        raise TinyVisionError(f"unknown split {split!r}; valid: train, val, test")
    dev = resolve_device(device)
    loader = DeviceLoader(getattr(data, split), cfg.eval_batch_size, device=dev, norm=loaded.norm)
    pred = predict_loader(loaded.model.to(dev), loader, tta=cfg.tta, flip=cfg.flips, precision=cfg.precision)
    report = class_report(pred, data.classes)
    return {"split": split, **split_metrics(pred), "per_class_recall": report.recall,
            "most_confused": report.most_confused, "classes": list(data.classes)}


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly, plus those found (recursively) in named folders."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            found.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not found:
        raise DataError(f"no image files found in {', '.join(map(str, paths))}")
    return found


def read_image(path: Path, input_shape: Sequence[int], pixel_max: float) -> torch.Tensor:
    """An image file -> (C,H,W) float tensor in the training data's pixel units."""
    c, h, w = input_shape
    arr = formats.read_image(path, (h, w), c).astype(np.float32)
    return torch.from_numpy(arr * (pixel_max / 255.0))


@torch.inference_mode()
def predict_files(loaded: LoadedModel, paths: Sequence[str | Path], *, top: int = 1) -> list[dict[str, Any]]:
    """One row per image: path, predicted class, probability (and the runners-up when top > 1)."""
    files = collect_images(paths)
    shape, classes = loaded.meta["input_shape"], loaded.meta["classes"]
    x = torch.stack([read_image(f, shape, loaded.meta.get("pixel_max", 255)) for f in files])
    probs = loaded.model(loaded.norm.apply(x)).softmax(dim=1)
    values, indices = probs.topk(min(top, len(classes)), dim=1)
    rows = []
    for f, v, i in zip(files, values.tolist(), indices.tolist()):
        row = {"path": str(f), "class": classes[i[0]], "probability": v[0]}
        for rank in range(1, len(i)):
            row[f"class_{rank + 1}"], row[f"probability_{rank + 1}"] = classes[i[rank]], v[rank]
        rows.append(row)
    return rows
