"""Where a benchmark ran: the first line every benchmark prints (CPU model, cores, torch, GPU)."""
from __future__ import annotations

import os
import platform

import torch


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The vector extensions that decide CPU kernels here: AVX-512, native bf16, AMX."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "?"
    shown = [name for name, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX512-BF16", "avx512_bf16"),
                                     ("AMX", "amx_tile")) if flag in flags]
    return ", ".join(shown) or "no AVX2"


def describe_machine(device: str = "cpu") -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"machine: {cpu_model()} ({cpu_flags()}), {cores} cores; torch {torch.__version__}"
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        text += f"; GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return text
