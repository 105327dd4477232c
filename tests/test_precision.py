"""Mixed precision: which autocast dtype a run gets (on a GPU: stood in for by monkeypatched
torch.cuda functions), TF32 and determinism, compile's tools, and that bf16 and fp32 both train."""
from __future__ import annotations

import pytest
import torch

import tinyvision as tv
from tinyvision import runtime
from tinyvision.errors import ConfigError
from tinyvision.models import create_model
from tinyvision.runtime import autocast_dtype, precision_name, set_determinism

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
MLP = create_model("mlp-40-40", (1, 28, 28), 10)
CNN = create_model("lenet", (1, 28, 28), 10)


def test_precision_policy_on_the_cpu() -> None:
    assert autocast_dtype("fp32", CPU, CNN) is None
    assert autocast_dtype("bf16", CPU, MLP) is torch.bfloat16  # asked for: given, native or not
    # auto unmeasured: fp32 on every CPU (probe.py measures whether bf16 pays on this one)
    assert autocast_dtype("auto", CPU, MLP) is None and autocast_dtype("auto", CPU, CNN) is None
    with pytest.raises(ConfigError, match="fp16 is for GPUs"):
        autocast_dtype("fp16", CPU, CNN)


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], bf16_runs: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # torch's answer counts emulation: true on a pre-Ampere GPU too
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_runs)


@pytest.mark.parametrize("capability, auto", [((7, 0), None), ((7, 5), None), ((8, 0), torch.bfloat16),
                                              ((8, 9), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_takes_bf16_only_on_gpus_with_bf16_tensor_cores(monkeypatch, capability, auto) -> None:
    _fake_gpu(monkeypatch, capability)
    for model in (MLP, CNN):  # on a GPU the MLP gains too: tensor cores, not oneDNN's casts
        assert autocast_dtype("auto", CUDA, model) is auto
        assert autocast_dtype("bf16", CUDA, model) is torch.bfloat16  # asked for: given, emulated or not
        assert autocast_dtype("fp32", CUDA, model) is None


def test_bf16_on_a_gpu_without_it_is_an_error_naming_the_field(monkeypatch) -> None:
    _fake_gpu(monkeypatch, (6, 1), bf16_runs=False)
    with pytest.raises(ConfigError, match="'precision': bf16 requested"):
        autocast_dtype("bf16", CUDA, CNN)
    assert autocast_dtype("auto", CUDA, CNN) is None


@pytest.fixture
def restore_math():
    """set_determinism changes process-wide torch flags: put them back."""
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
             torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    yield
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved[:2]
    torch.use_deterministic_algorithms(saved[2])
    torch.backends.cudnn.benchmark = saved[3]


def test_fp32_on_cuda_uses_tf32_unless_deterministic(monkeypatch, restore_math) -> None:
    _fake_gpu(monkeypatch, (9, 0))
    set_determinism(False, CUDA)
    assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert precision_name("fp32", CUDA, MLP) == "tf32" and precision_name("auto", CUDA, CNN) == "bf16"
    assert precision_name("fp32", CPU, MLP) == "fp32"  # the CPU's fp32 is untouched
    set_determinism(True, CUDA)  # the reference result: IEEE fp32, deterministic kernels
    assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    assert precision_name("fp32", CUDA, MLP) == "fp32"
    set_determinism(False, CUDA)  # the next run in the process gets the fast kernels back
    assert precision_name("fp32", CUDA, MLP) == "tf32" and not torch.are_deterministic_algorithms_enabled()
    set_determinism(True, CPU)  # a CPU run leaves CUDA's flags as they are
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    _fake_gpu(monkeypatch, (7, 5))  # no TF32 before Ampere: recorded as what it is
    assert precision_name("fp32", CUDA, MLP) == "fp32"


def test_compile_says_in_one_line_which_tool_is_missing(monkeypatch) -> None:
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="'compile': torch.compile on cpu needs a C/C\\+\\+ compiler"):
        runtime.check_compile(CPU)
    monkeypatch.setattr(runtime, "has_triton", lambda: False)
    with pytest.raises(ConfigError, match="'compile': torch.compile on CUDA needs the triton package"):
        runtime.check_compile(CUDA)
    monkeypatch.setattr(runtime, "has_triton", lambda: True)
    with pytest.raises(ConfigError, match="on CUDA needs a C/C\\+\\+ compiler"):
        runtime.check_compile(CUDA)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: f"/usr/bin/{name}")
    runtime.check_compile(CPU)
    runtime.check_compile(CUDA)


def test_unknown_precision_is_an_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="precision"):
        tv.make_config(precision="fp8")
    with pytest.raises(ConfigError, match="'precision'"):
        autocast_dtype("half", CPU, CNN)


DIGITS = dict(dataset="digits", model="digits-cnn", epochs=25, batch_norm=True, augment="translate",
              translate=1, schedule="onecycle", lr=3e-3, label_smoothing=0.1)


@pytest.mark.slow
def test_bf16_and_fp32_both_train_and_the_result_says_which(tmp_path) -> None:
    results = {p: tv.train({**DIGITS, "precision": p}, out=tmp_path / p, quiet=True) for p in ("bf16", "fp32")}
    for precision, result in results.items():
        assert result["precision"] == precision
        assert result["test"]["accuracy"] >= 0.95, precision
    # bf16 really ran: the same seed gives other numbers than fp32
    assert results["bf16"]["test"]["loss"] != results["fp32"]["test"]["loss"]
