"""Use a finished run: rebuild its model from model.safetensors, evaluate it, classify images."""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import runs
from .files import load_weights
from .data import formats
from .data.formats import IMAGE_SUFFIXES, is_image_file  # noqa: F401 - IMAGE_SUFFIXES: public name
from .data.loader import DeviceLoader, Normalization
from .errors import ConfigError, DataError, SpecError, TinyVisionError, UnknownNameError
from .evaluate import metrics_record, predict_loader
from .models.source import ModelError, ModelSource, from_record
from .data import load_data
from .runtime import configure_threads, resolve_device, set_determinism, use_channels_last
from .shortrepr import clip


@dataclass
class LoadedModel:
    model: nn.Module  # eval mode, on CPU
    meta: dict[str, Any]  # spec, classes, input_shape, mean, std, ...

    @property
    def norm(self) -> Normalization:
        return Normalization(tuple(self.meta["mean"]), tuple(self.meta["std"]))


def load_model(path: str | Path, *, trust_pickle: bool = False, model: Any = None) -> LoadedModel:
    """A run directory or a weights file -> the model with its metadata. `model`: the class,
    instance or factory a run was given in Python (a notebook's class), which no file can rebuild."""
    path = Path(path)
    weights = path / runs.WEIGHTS if path.is_dir() else path
    if path.is_dir() and not weights.exists():
        status = (runs.read_result(path) or {}).get("status", "no result")
        raise DataError(f"{path}: no {runs.WEIGHTS} (run status: {status})")
    try:
        state, meta = load_weights(weights, trust_pickle=trust_pickle)
    except DataError as exc:
        if "Weights only load failed" not in str(exc):  # torch's advice follows: weights_only=False
            raise
        raise DataError(f"{weights}: not a loadable weights-only file ({_weights_only_reason(weights)}); "
                        "tinyvision reads .pt/.pth files with weights_only=True only: save the "
                        "state_dict's tensors alone") from None
    if meta.get("format", runs.WEIGHTS_FORMAT) != runs.WEIGHTS_FORMAT:  # none: read as this one
        raise DataError(f"{weights}: weights in format {clip(meta['format'], 60)}, written by another "
                        f"tinyvision version; this one reads {runs.WEIGHTS_FORMAT}")
    if "spec" not in meta:
        raise DataError(f"{weights}: no tinyvision metadata (spec, classes, input shape)")
    spec, shape, classes = _check_meta(meta, weights)
    record = meta.get("source") if isinstance(meta.get("source"), dict) else {"reference": spec, "kind": "spec"}
    source = ModelSource(spec, "spec") if record.get("kind") == "spec" and model is None else \
        from_record(record, weights.parent, given=model)
    net = _built(source, shape, classes, weights)
    found = {k: v.shape for k, v in state.items()}
    expected = {k: v.shape for k, v in net.state_dict().items()}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) or [k for k in expected if found[k] != expected[k]]
        raise DataError(f"{weights}: weights do not fit model {source.label!r} for input {list(shape)} "
                        f"({', '.join(wrong[:3])} differ)")
    net.load_state_dict(state)
    return LoadedModel(net.eval(), meta)


def _built(source: ModelSource, shape: tuple[int, int, int], classes: int, weights: Path) -> nn.Module:
    """The model to load weights into (its initial weights drawn without touching the caller's RNG);
    a spec is checked on the meta device first, so a damaged one cannot make us allocate."""
    try:
        if source.is_spec:
            with torch.device("meta"):
                source.build(shape, classes)
        with torch.random.fork_rng():
            return source.build(shape, classes)
    except (SpecError, UnknownNameError) as exc:
        raise DataError(f"{weights}: its metadata names a model that cannot be built: {exc}") from None
    except ConfigError as exc:
        if isinstance(exc, ModelError):
            raise
        raise DataError(f"{weights}: its metadata names a model that cannot be built: {exc}") from None


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
                 device: str = "auto", model: Any = None) -> dict[str, Any]:
    """Re-evaluate a saved model on one split of its dataset, the way its run evaluated: the run's
    threads, determinism (TF32 or IEEE fp32 on CUDA), memory layout, precision and TTA. Returns
    split, classes and result.json's test metrics for that split (evaluate.metrics_record: loss,
    accuracy, macro_f1, top_k_accuracy, ece, calibration, per_class, confusion, most_confused)."""
    cfg = runs.read_config(run_dir)
    if data_dir:
        cfg = cfg.model_copy(update={"data_dir": data_dir})
    loaded = load_model(run_dir, model=model)
    data = load_data(cfg)
    if split not in ("train", "val", "test"):
        raise TinyVisionError(f"unknown split {split!r}; valid: train, val, test")
    if len(getattr(data, split)) == 0:
        why = " (val_size=0: it validated on the test set)" if split == "val" and cfg.validates_on_test else ""
        raise TinyVisionError(f"{run_dir}: its {split} split has no images{why}; evaluate another split")
    dev = resolve_device(device)
    cfg = _as_run_decided(cfg, run_dir)  # what its auto settings were (probe.py): the run's own numbers
    if dev.type == "cpu":
        configure_threads(cfg.threads)  # oneDNN's kernels and summation order follow the thread count
    set_determinism(cfg.deterministic, dev)
    channels_last = cfg.channels_last if cfg.channels_last is not None else use_channels_last(dev, loaded.model)
    model = loaded.model.to(dev, memory_format=torch.channels_last) if channels_last else loaded.model.to(dev)
    loader = DeviceLoader(getattr(data, split), cfg.eval_batch_size, device=dev, norm=loaded.norm,
                          channels_last=channels_last)
    pred = predict_loader(model, loader, tta=cfg.tta, flip=cfg.flips, precision=cfg.precision)
    found = metrics_record(pred, data.classes, top_k=cfg.top_k, bins=cfg.calibration_bins)
    return {"split": split, **found, "per_class_recall": found["per_class"]["recall"], "classes": list(data.classes)}


def _as_run_decided(cfg: Any, run_dir: str | Path) -> Any:
    """The config with the settings its run resolved from auto (result.json "auto"), so that an
    evaluation computes as the run's own test did."""
    decided = (runs.read_result(run_dir) or {}).get("auto") or {}
    chosen = {key: decided[key] for key in ("precision", "threads", "channels_last") if decided.get(key) is not None}
    return cfg.model_copy(update=chosen) if chosen else cfg


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly, plus those found (recursively) in named folders: the files a
    folder dataset reads (formats.is_image_file)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += _image_files_under(p)
        elif p.exists():
            found.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not found:
        raise DataError(f"no image files found in {', '.join(map(str, paths))}")
    return found


def _image_files_under(folder: Path) -> list[Path]:
    """The image files under `folder`, at any depth, sorted, in one walk; a folder (or sub-folder)
    that cannot be listed is one line, rather than predictions for part of the images or "no image
    files" (a plain glob passes over it)."""
    def refuse(exc: OSError) -> None:
        raise DataError(f"{exc.filename or folder}: cannot read the folder ({exc.strerror or exc})")
    found = [Path(top) / name for top, _, names in os.walk(folder, onerror=refuse, followlinks=True)
             for name in names]
    return sorted(f for f in found if is_image_file(f) and f.is_file())


def _weights_only_reason(path: Path) -> str:
    """Why torch refused a pickle under weights_only=True, without its advice to load it with
    weights_only=False (that can run code: never what tinyvision should suggest)."""
    try:
        torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure: say what torch found
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        found = re.search(r"WeightsUnpickler error: (.+?)(?:\.? Please use|\n|$)", text)
        if found:
            return found.group(1).strip()
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln
                 and "can still be loaded" not in ln]
        return (lines[0][:200] if lines else type(exc).__name__)
    return "it holds more than tensors"


def read_image(path: Path, input_shape: Sequence[int], pixel_max: float) -> torch.Tensor:
    """An image file -> (C,H,W) float tensor in the training data's pixel units."""
    c, h, w = input_shape
    arr = formats.read_image(path, (h, w), c).astype(np.float32)
    return torch.from_numpy(arr * (pixel_max / 255.0))


def check_top(top: object, classes: int) -> int:
    """--top as the number of classes to report: an int >= 1 (ConfigError otherwise), at most the
    model's class count."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError(f"top must be a whole number >= 1 (classes to report per image), got {top!r}")
    return min(top, classes)


PREDICT_BATCH = 1024  # images decoded, normalised and classified at a time


def _decode(path: Path, shape: Sequence[int]) -> np.ndarray | str:
    """An image file as uint8 (C, H, W), or the one-line reason it could not be read."""
    c, h, w = shape
    try:
        return formats.read_image(path, (h, w), c)
    except DataError as exc:
        return str(exc)


@torch.inference_mode()
def classify_files(loaded: LoadedModel, paths: Sequence[str | Path], *, top: int = 1,
                   progress: Optional[Callable[[int], None]] = None
                   ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(one row per readable image: path, predicted class, probability, and the runners-up
    class_2, probability_2, ... when top > 1; (path, reason) per file that could not be read).
    Images are decoded by a pool of threads (Pillow releases the GIL while it decodes) and
    classified PREDICT_BATCH at a time; progress(n) follows each batch. A bad file does not stop
    the others; a missing path or no image at all is a DataError."""
    files = collect_images(paths)
    shape, classes = loaded.meta["input_shape"], loaded.meta["classes"]
    k = check_top(top, len(classes))
    scale = loaded.meta.get("pixel_max", 255) / 255.0  # the training data's pixel units
    rows: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        for start in range(0, len(files), PREDICT_BATCH):
            chunk = files[start:start + PREDICT_BATCH]
            decoded = list(pool.map(lambda f: _decode(f, shape), chunk))
            good = [(f, a) for f, a in zip(chunk, decoded) if not isinstance(a, str)]
            failed += [(str(f), a) for f, a in zip(chunk, decoded) if isinstance(a, str)]
            if good:
                x = torch.from_numpy(np.stack([a for _, a in good])).to(torch.float32) * scale
                values, indices = loaded.model(loaded.norm.apply(x)).softmax(dim=1).topk(k, dim=1)
                rows += [_row(f, v, i, classes) for (f, _), v, i in zip(good, values.tolist(), indices.tolist())]
            if progress is not None:
                progress(len(chunk))
    return rows, failed


def _row(path: Path, values: list[float], indices: list[int], classes: Sequence[str]) -> dict[str, Any]:
    row = {"path": str(path), "class": classes[indices[0]], "probability": values[0]}
    for rank in range(1, len(indices)):
        row[f"class_{rank + 1}"], row[f"probability_{rank + 1}"] = classes[indices[rank]], values[rank]
    return row


def format_prediction(row: dict[str, Any]) -> str:
    """A classify_files row as a terminal line: path, then class and probability for each rank,
    tab-separated (`a.png	7	0.9812	1	0.0100`)."""
    ranks = [("class", "probability")] + [(f"class_{k}", f"probability_{k}") for k in range(2, len(row))]
    return "\t".join([row["path"], *(f"{row[c]}\t{row[p]:.4f}" for c, p in ranks if c in row)])


def predict_files(loaded: LoadedModel, paths: Sequence[str | Path], *, top: int = 1) -> list[dict[str, Any]]:
    """One row per image: path, predicted class, probability (and the runners-up when top > 1).
    Any unreadable file is a DataError naming every one (classify_files keeps the good rows)."""
    rows, failed = classify_files(loaded, paths, top=top)
    if failed:
        raise DataError(unreadable_message(failed))
    return rows


def unreadable_message(failed: Sequence[tuple[str, str]], shown: int = 5) -> str:
    """One line for the images that could not be read: the first `shown` reasons, then a count."""
    if len(failed) == 1:
        return failed[0][1]
    listed = "; ".join(reason for _, reason in failed[:shown])
    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    return f"{len(failed)} images could not be read: {listed}{more}"


def label_from_path(path: str | Path, classes: Sequence[str]) -> int | None:
    """The class an image's folders name (the nearest one named after a class: `pets/test/cat/a.png`
    -> cat), or None when no folder above it is a class: the label a folder dataset would give it."""
    index = {c: i for i, c in enumerate(classes)}
    return next((index[p.name] for p in Path(path).parents if p.name in index), None)


def folder_mistakes(loaded: LoadedModel, folder: str | Path) -> list[dict[str, Any]]:
    """`predict` on a folder of class sub-folders: its wrongly classified images, most confident
    first, as mistakes.csv's rows (path, true, predicted, confidence, top3, ...; index: position in
    the folder's sorted image list). Images outside a class folder are left out (no known label);
    unreadable ones are named in a warning."""
    import warnings

    from .mistakes import mistake_rows

    classes = list(loaded.meta["classes"])
    above = Path(folder).absolute().parent  # only the folder and those inside it name classes

    def label(path: str | Path) -> int | None:
        return label_from_path(Path(path).absolute().relative_to(above), classes)

    files = [f for f in collect_images([folder]) if label(f) is not None]
    if not files:
        raise DataError(f"{folder}: no image in a sub-folder named after one of the model's classes "
                        f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
    rows, failed = classify_files(loaded, files, top=len(classes))
    if failed:
        warnings.warn(unreadable_message(failed), stacklevel=2)
    probs = torch.zeros(len(rows), len(classes))
    for r, row in enumerate(rows):
        probs[r, classes.index(row["class"])] = row["probability"]
        for rank in range(2, len(classes) + 1):
            probs[r, classes.index(row[f"class_{rank}"])] = row[f"probability_{rank}"]
    labels = [label(row["path"]) for row in rows]
    return mistake_rows(probs, labels, classes, [str(Path(row["path"]).absolute()) for row in rows])
