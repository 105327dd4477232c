"""Export a finished run's model for other programs: a model file and, beside it, a JSON saying what
to feed it (input shape and pixel units, the normalisation, the class names, the outputs).

Formats (FORMATS): "onnx" (torch.onnx's torch.export-based exporter; runs in onnxruntime from any
language), "pt2" (torch.export's ExportedProgram: torch.export.load, no Python class needed) and
"torchscript" (torch.jit.trace; PyTorch deprecates TorchScript, but C++ programs still load it).
The normalisation is inside every exported graph: it takes raw pixels in the run's stored units
(Digits 0..16, MNIST 0..255) as float32 (N, C, H, W) and returns the logits and the softmax
probabilities, the numbers `tinyvision predict` reports. Each export is loaded back and checked
against the run's model on a batch of random images before this returns.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from . import __version__, rundir, runs
from .errors import ConfigError, TinyVisionError
from .files import TEMP_SUFFIX, atomic_write
from .inference import LoadedModel, load_model
from .models.source import ModelError

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript.pt"}  # format -> file suffix
CHECK_TOLERANCE = 1e-4  # largest difference in a probability between the export and the run's model
CHECK_BATCH = 7  # images of the check: not the traced batch size, so a batch size baked in shows
_TRACE_BATCH = 2  # the example batch exported with (1 would let torch specialise the batch size)


class Packaged(nn.Module):
    """The run's model with its input normalisation in front and softmax behind: raw pixels
    (N, C, H, W) float32 in the stored units -> (logits, probabilities), each (N, classes). The
    normalisation is Normalization.apply's own arithmetic: x * (1/std) + (-mean/std) per channel."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        shape = (1, len(mean), 1, 1)
        self.register_buffer("scale", torch.tensor([1.0 / s for s in std]).view(shape))
        self.register_buffer("shift", torch.tensor([-m / s for m, s in zip(mean, std)]).view(shape))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(torch.addcmul(self.shift, images, self.scale))
        return logits, logits.float().softmax(dim=1)


def export_paths(run_dir: str | Path, format: str, out: Optional[str | Path] = None) -> tuple[Path, Path]:
    """(model file, its JSON): `out` or RUN/model<suffix>, and the same name + ".json"."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    path = Path(out) if out is not None else Path(run_dir) / f"model{FORMATS[format]}"
    return path, path.with_name(path.name + ".json")


def export_run(run_dir: str | Path, format: str = "onnx", *, model: Any = None,
               out: Optional[str | Path] = None) -> list[Path]:
    """Export a finished run's model (the weights in model.safetensors) as `format`; returns [model
    file, JSON]. model: the class, instance or factory a run was given in Python (a notebook's
    class), which no file can rebuild. Existing files are never overwritten (TinyVisionError)."""
    path, meta_path = export_paths(run_dir, format, out)
    state = rundir.inspect_run(run_dir)
    if not state.is_run:
        raise TinyVisionError(f"{run_dir}: not a run directory ({state.kind.value}); export takes a run that "
                              "tinyvision train wrote")
    for p in (path, meta_path):
        if p.exists():
            raise TinyVisionError(f"{p} already exists; nothing was overwritten (delete it, or choose --out)")
    if not path.parent.is_dir():
        raise TinyVisionError(f"{path}: its folder {path.parent} does not exist")
    cfg = runs.read_config(run_dir)
    if cfg.model.startswith("python:") and model is None:
        name = cfg.model.removeprefix("python:").split(".")[-1]
        raise ModelError(f"{run_dir}: its model {name} was given in Python, which a command cannot build again; "
                         f"in Python: tinyvision.export.export_run({str(run_dir)!r}, {format!r}, model={name})")
    loaded = load_model(run_dir, model=model)
    packaged = Packaged(loaded.model, tuple(loaded.meta["mean"]), tuple(loaded.meta["std"])).eval()
    packaged.requires_grad_(False)
    example = _random_pixels(loaded, _TRACE_BATCH, seed=0)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    try:
        with _quiet():
            _WRITERS[format](packaged, example, tmp)
            check = _check(format, packaged, tmp, _random_pixels(loaded, CHECK_BATCH, seed=1))
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    run_precision = (runs.read_result(run_dir) or {}).get("precision", "fp32")
    atomic_write(meta_path, json.dumps(describe(loaded, format, path, cfg.tta, run_precision, check), indent=2) + "\n")
    return [path, meta_path]


def describe(loaded: LoadedModel, format: str, path: Path, tta: bool, run_precision: str,
             check: float) -> dict[str, Any]:
    """The JSON beside an export: enough for another program to feed it raw images."""
    meta = loaded.meta
    c, h, w = meta["input_shape"]
    classes, pixel_max = list(meta["classes"]), meta.get("pixel_max", 255)
    return {
        "format": format, "file": path.name, "model": meta.get("model"), "dataset": meta.get("dataset"),
        "input": {"name": "images", "shape": [None, c, h, w], "dtype": "float32", "layout": "NCHW",
                  "pixel_max": pixel_max, "channels": "grayscale" if c == 1 else "RGB" if c == 3 else f"{c} channels",
                  "feed": f"raw pixels as the dataset stores them, 0 (black) to {pixel_max:g} (white); from an 8-bit "
                          f"image file: convert to {'grayscale' if c == 1 else 'RGB'}, resize to {h}x{w} (bilinear), "
                          f"multiply by {pixel_max:g}/255"},
        "normalization": {"in_graph": True, "mean": list(meta["mean"]), "std": list(meta["std"]),
                          "units": "the input's pixel units, per channel",
                          "what": "the graph computes (x - mean[c]) / std[c] itself: feed raw pixels, not normalised "
                                  "ones", "normalize": meta.get("normalize")},
        "outputs": [{"name": "logits", "shape": [None, len(classes)], "what": "the model's own outputs"},
                    {"name": "probs", "shape": [None, len(classes)],
                     "what": "softmax of the logits: class probabilities, as tinyvision predict reports them"}],
        "classes": classes,
        "test_time_augmentation": False if not tta else "the run evaluated with TTA; the export is the plain model",
        "precision": "float32" if run_precision == "fp32" else
                     f"float32; the run evaluated in {run_precision} autocast, so its predictions.safetensors may "
                     "differ by about 1e-2 (tinyvision predict, in float32, agrees to about 1e-6)",
        "check": {"images": CHECK_BATCH, "max_abs_diff_probs": check, "against": "the run's model in PyTorch"},
        "versions": {"tinyvision": __version__, "torch": torch.__version__.split("+")[0]},
    }


def _random_pixels(loaded: LoadedModel, n: int, seed: int) -> torch.Tensor:
    """(n, C, H, W) float32 pixels drawn uniformly over the stored range."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *loaded.meta["input_shape"]), generator=g) * float(loaded.meta.get("pixel_max", 255))


def _dynamic_batch() -> dict[str, Any]:
    return {"images": {0: torch.export.Dim("batch", min=1)}}


def _write_onnx(packaged: Packaged, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(packaged, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                      input_names=["images"], output_names=["logits", "probs"], dynamic_shapes=_dynamic_batch())


def _write_pt2(packaged: Packaged, example: torch.Tensor, path: Path) -> None:
    program = torch.export.export(packaged, (example,), dynamic_shapes=_dynamic_batch())
    with path.open("wb") as f:
        torch.export.save(program, f)


def _write_torchscript(packaged: Packaged, example: torch.Tensor, path: Path) -> None:
    traced = torch.jit.trace(packaged, example)
    torch.jit.save(traced, str(path))


_WRITERS: dict[str, Callable[[Packaged, torch.Tensor, Path], None]] = {
    "onnx": _write_onnx, "pt2": _write_pt2, "torchscript": _write_torchscript}


def run_exported(format: str, path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """An exported file as a function: float32 pixels (N, C, H, W) -> probabilities (N, classes),
    loaded the way another program would (onnxruntime, torch.export.load, torch.jit.load)."""
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(["probs"], {"images": np.ascontiguousarray(x, dtype=np.float32)})[0]
    if format == "pt2":  # from bytes: torch.export.load takes only file names that end in .pt2
        module = torch.export.load(io.BytesIO(Path(path).read_bytes())).module()
    else:
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice: TorchScript is asked for here
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path))
    return lambda x: module(torch.as_tensor(x, dtype=torch.float32))[1].detach().numpy()


def _check(format: str, packaged: Packaged, path: Path, images: torch.Tensor) -> float:
    """The largest difference in a probability between the exported file and the model; an
    export that differs by more than CHECK_TOLERANCE is refused."""
    if format == "onnx":
        try:
            import onnxruntime  # noqa: F401 - only to check that it is there
        except ImportError:
            raise TinyVisionError("onnx export needs onnxruntime to check it: pip install 'tinyvision[export]'") \
                from None
    with torch.inference_mode():
        expected = packaged(images)[1].numpy()
    diff = float(np.abs(run_exported(format, path)(images.numpy()) - expected).max())
    if not diff <= CHECK_TOLERANCE:
        raise TinyVisionError(f"the {format} export's probabilities differ from the model's by {diff:.2e} "
                              f"(more than {CHECK_TOLERANCE}); nothing was written")
    return diff


def _publish(tmp: Path, path: Path) -> None:
    """tmp as `path`, unless `path` appeared meanwhile (a link fails where a rename would overwrite)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise TinyVisionError(f"{path} already exists; nothing was overwritten (delete it, or choose --out)") from None


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporters' progress lines, deprecation notices and missing-torchvision warnings held back;
    a failure becomes one line naming the model's problem."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    except ImportError as exc:
        raise TinyVisionError(f"export needs {exc.name or 'a package'}: pip install 'tinyvision[export]'") from None
    except TinyVisionError:
        raise
    except OSError as exc:  # the disk's (full, unwritable), not the model's
        raise TinyVisionError(f"could not write the export: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - torch's exporters raise many kinds: say what, in one line
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise TinyVisionError(f"torch could not export this model: {type(exc).__name__}: {first[:300]}") from None
    finally:
        logger.setLevel(level)
