"""Where and how tensors run: device choice, CPU threads, autocast, determinism."""
from __future__ import annotations

import contextlib
import os
from functools import cache
from typing import ContextManager, Optional, get_args

import torch

from .config import Precision
from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an unavailable explicit device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config field 'device': unknown device {name!r} (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config field 'device': {name!r} requested but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"config field 'device': {name!r} requested but MPS is not available")
    return device


def configure_threads(threads: Optional[int]) -> int:
    """Intra-op threads for CPU work: the given count, else every core this process may use."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = threads or available or 1
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


PRECISIONS = get_args(Precision)


def has_conv(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


@cache  # the hardware does not change: asked once per process, not per epoch
def cpu_has_native_bf16() -> bool:
    """oneDNN runs bf16 natively here (AVX512-BF16 or AMX); elsewhere it emulates it, slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(precision: str, device: torch.device, model: torch.nn.Module) -> Optional[torch.dtype]:
    """The autocast dtype for `precision` (None = plain fp32).

    auto: bf16 on CUDA GPUs that support it; on a CPU with native bf16 only for convolutional
    models, where it halves the time of the convolutions (an MLP's tiny matmuls get slower from the
    extra casts; benchmarks/README.md); fp32 elsewhere.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"config field 'precision': unknown precision {precision!r} ({', '.join(PRECISIONS)})")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if precision == "bf16" and not supported:
            raise ConfigError("config field 'precision': bf16 requested but this GPU does not support it")
        return torch.bfloat16 if supported else None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cpu" and has_conv(model) and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def precision_name(precision: str, device: torch.device, model: torch.nn.Module) -> str:
    """What `precision` resolves to here, as recorded in result.json: "fp32" or "bf16"."""
    return "fp32" if autocast_dtype(precision, device, model) is None else "bf16"


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """Mixed precision in `dtype` (weights and optimiser stay fp32); a no-op for dtype None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def use_channels_last(device: torch.device, model: torch.nn.Module) -> bool:
    """channels_last pays for convolutions on CUDA (tensor cores) and on CPU, where oneDNN's
    convolutions and batch norm run NHWC natively and skip layout reorders (benchmarks/README.md)."""
    return device.type in ("cuda", "cpu") and has_conv(model)


def set_determinism(enabled: bool, device: torch.device) -> None:
    """Deterministic kernels or not, as the run asks (a run in the same process after a
    deterministic one gets the fast kernels back). cuBLAS also needs CUBLAS_WORKSPACE_CONFIG, which
    pipeline.build sets before anything starts CUDA."""
    if not enabled:
        if torch.are_deterministic_algorithms_enabled():
            torch.use_deterministic_algorithms(False)
        return
    torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
