"""Mixed precision: which autocast dtype a run gets, and that bf16 and fp32 both train."""
from __future__ import annotations

import pytest
import torch

import tinyvision as tv
from tinyvision.errors import ConfigError
from tinyvision.models import create_model
from tinyvision.runtime import autocast_dtype, cpu_has_native_bf16

CPU = torch.device("cpu")
MLP = create_model("mlp-40-40", (1, 28, 28), 10)
CNN = create_model("lenet", (1, 28, 28), 10)


def test_precision_policy_on_the_cpu() -> None:
    assert autocast_dtype("fp32", CPU, CNN) is None
    assert autocast_dtype("bf16", CPU, MLP) is torch.bfloat16  # asked for: given, native or not
    assert autocast_dtype("auto", CPU, MLP) is None  # casts cost more than an MLP's tiny matmuls save
    expected = torch.bfloat16 if cpu_has_native_bf16() else None
    assert autocast_dtype("auto", CPU, CNN) is expected


def test_unknown_precision_is_an_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="precision"):
        tv.make_config(precision="fp16")
    with pytest.raises(ConfigError, match="'precision'"):
        autocast_dtype("half", CPU, CNN)


DIGITS = dict(dataset="digits", model="digits-cnn", epochs=25, batch_norm=True, augment="translate",
              translate=1, schedule="onecycle", lr=3e-3, label_smoothing=0.1)


def test_bf16_and_fp32_both_train_and_the_result_says_which(tmp_path) -> None:
    results = {p: tv.train({**DIGITS, "precision": p}, out=tmp_path / p, quiet=True) for p in ("bf16", "fp32")}
    for precision, result in results.items():
        assert result["precision"] == precision
        assert result["test"]["accuracy"] >= 0.95, precision
    # bf16 really ran: the same seed gives other numbers than fp32
    assert results["bf16"]["test"]["loss"] != results["fp32"]["test"]["loss"]
