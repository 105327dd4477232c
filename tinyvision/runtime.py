"""Where and how tensors run: device choice, CPU threads, autocast, determinism."""
from __future__ import annotations

import contextlib
import os
from typing import ContextManager, Optional

import torch

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


def autocast(device: torch.device) -> ContextManager:
    """bf16 autocast on CUDA (tensor cores); plain fp32 elsewhere, where bf16 is slower or inexact."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_channels_last(device: torch.device, model: torch.nn.Module) -> bool:
    """channels_last pays for convolutions on CUDA (tensor cores) and on CPU, where oneDNN's
    convolutions and batch norm run NHWC natively and skip layout reorders (benchmarks/README.md)."""
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    return device.type in ("cuda", "cpu") and has_conv


def set_determinism(enabled: bool, device: torch.device) -> None:
    """Deterministic kernels; cuBLAS needs CUBLAS_WORKSPACE_CONFIG set before CUDA starts."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
