"""Where and how tensors run: device choice, CPU threads, autocast, determinism."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"config field 'device': {name!r} requested but only {torch.cuda.device_count()} "
                          f"CUDA GPU(s) are visible (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
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


def cuda_ampere_or_later(device: torch.device) -> bool:
    """bf16 (and TF32) tensor cores: compute capability 8.0 (Ampere) or later.
    torch.cuda.is_bf16_supported() is also true on older GPUs, which emulate bf16 (slower than fp32)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def autocast_dtype(precision: str, device: torch.device, model: torch.nn.Module) -> Optional[torch.dtype]:
    """The autocast dtype for `precision` (None = plain fp32).

    auto, when no measurement decided it (probe.py measures the candidates on this machine and
    passes its choice here as fp32 or bf16): bf16 on CUDA GPUs with bf16 tensor cores (compute
    capability >= 8.0), fp32 elsewhere. bf16 asked for is given wherever it runs at all, emulated
    or not; fp16 (with a gradient scaler: training.single) only on a GPU.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"config field 'precision': unknown precision {precision!r} ({', '.join(PRECISIONS)})")
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("config field 'precision': fp16 is for GPUs without bf16 (a T4, say); on "
                              f"{device.type} use fp32 or bf16")
        return torch.float16
    if device.type == "cuda":
        if precision == "bf16":
            if not torch.cuda.is_bf16_supported():
                raise ConfigError("config field 'precision': bf16 requested but this GPU does not support it; "
                                  "use fp16 (with a gradient scaler) or fp32")
            return torch.bfloat16
        return torch.bfloat16 if cuda_ampere_or_later(device) else None
    return torch.bfloat16 if precision == "bf16" else None


def precision_name(precision: str, device: torch.device, model: torch.nn.Module) -> str:
    """What `precision` resolves to here, as recorded in result.json: "bf16" or "fp16" (autocast),
    "tf32" (fp32 on CUDA with TF32 matmuls and convolutions: set_determinism) or "fp32"."""
    dtype = autocast_dtype(precision, device, model)
    if dtype is not None:
        return "fp16" if dtype == torch.float16 else "bf16"
    return "tf32" if device.type == "cuda" and tf32_enabled() and cuda_ampere_or_later(device) else "fp32"


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
    """Deterministic kernels or not, as the run asks, and with that the fp32 arithmetic on CUDA
    (a run in the same process after a deterministic one gets the fast kernels back).

    What deterministic=true guarantees on a GPU: the same config and seed on the same GPU model,
    driver, CUDA, cuDNN and torch versions and process count give bit-identical weights and metrics,
    run after run, and a resumed run ends bit-identical to an uninterrupted one. Not promised: the
    same numbers on another GPU model, another software version or on the CPU (other kernels sum in
    another order). An operation without a deterministic CUDA kernel raises a RuntimeError naming it
    instead of running nondeterministically. cuBLAS also needs CUBLAS_WORKSPACE_CONFIG before CUDA
    starts: the `tinyvision` command sets it at entry (cli.entry), pipeline.build for Python callers.

    fp32 on CUDA (precision=fp32, and what autocast leaves in fp32): TF32 tensor cores for matmuls
    and convolutions (10-bit mantissa inputs, fp32 accumulation; many times the IEEE fp32 rate on
    Ampere and later), as timm and nanoGPT set it, except with deterministic=true, which asks for
    the reference result: IEEE fp32, closest to the CPU's. result.json records "tf32" or "fp32".
    """
    if device.type == "cuda":
        set_tf32(not enabled)
    if not enabled:
        if torch.are_deterministic_algorithms_enabled():
            torch.use_deterministic_algorithms(False)
        return
    torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False


def set_tf32(enabled: bool) -> None:
    """TF32 (or IEEE fp32) for CUDA's fp32 matmuls and cuDNN convolutions; the CPU is unaffected.
    torch >= 2.9 API: mixing it with the legacy allow_tf32 flags is an error in torch."""
    mode = "tf32" if enabled else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode


def tf32_enabled() -> bool:
    return torch.backends.cuda.matmul.fp32_precision == "tf32"


def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def check_compile(device: torch.device) -> None:
    """compile=true needs the tools torch.compile's default backend (Inductor) builds with: a C++
    compiler for CPU code ($CXX, else g++; clang++ on macOS) and, on CUDA, the triton package (a
    dependency of torch's Linux CUDA wheels; CPU wheels lack it) plus a C compiler ($CC, else cc,
    gcc or clang) for Triton's launchers. Without them torch fails at the first step with a long
    traceback; this says what is missing in one line first. Compiling adds seconds to minutes to
    the first steps (benchmarks/README.md)."""
    where = "CUDA" if device.type == "cuda" else device.type
    if device.type == "cuda":
        if not has_triton():
            raise ConfigError("config field 'compile': torch.compile on CUDA needs the triton package "
                              "(pip install triton, matching your torch), or compile=false")
        compilers = [os.environ.get("CC") or "cc", "gcc", "clang"]
    elif device.type == "cpu":
        compilers = [os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")]
    else:
        return
    if not any(shutil.which(c) for c in compilers):
        raise ConfigError(f"config field 'compile': torch.compile on {where} needs a C/C++ compiler "
                          f"({' or '.join(compilers)} on the PATH), or compile=false")
