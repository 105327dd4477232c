"""Model specs, builders, presets and summaries, checked against hand-calculated counts."""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tinyvision.errors import ConfigError, SpecError, UnknownNameError
from tinyvision.models import (ACTIVATIONS, MODELS, ModelSpec, build_model, count_parameters, create_model,
                               format_summary, list_models, parse_spec, resolve_spec, summarize)
from tinyvision.models.build import ACTIVATION_LAYERS
from tinyvision.report.tables import layer_table


# --- every registered preset -------------------------------------------------------------------

@pytest.mark.parametrize("name", list_models())
def test_preset_builds_and_runs(name):
    preset = MODELS.get(name)
    model = create_model(name, preset.input_shape, 10)
    assert model(torch.randn(3, *preset.input_shape)).shape == (3, 10)
    summary = summarize(model, preset.input_shape)
    assert summary.params == sum(p.numel() for p in model.parameters())
    assert sum(r.params for r in summary.rows) == summary.params
    assert summary.rows[-1].name == "head" and summary.rows[-1].output_shape == (10,)
    assert model.spec == parse_spec(preset.spec).to_string()
    assert model.input_shape == preset.input_shape and model.num_classes == 10


# Hand-calculated: conv = out*in*k*k + out, linear = in*out + out.
PARAM_COUNTS = {
    # conv1 16*1*9+16 = 160; conv2 4*16*9+4 = 580; 28 -> 14 -> 7, head 4*7*7=196: 196*10+10 = 1,970
    "cnn-tiny": 160 + 580 + 1_970,  # 2,710
    # conv1 20*1*25+20 = 520; conv2 50*20*25+50 = 25,050; 28 -> 24 -> 12 -> 8 -> 4, flatten 50*4*4 = 800
    # fc1 800*500+500 = 400,500; head 500*10+10 = 5,010
    "lenet": 520 + 25_050 + 400_500 + 5_010,  # 431,080
    # 784*40+40 = 31,400; 40*40+40 = 1,640; 40*10+10 = 410
    "mlp-40-40": 31_400 + 1_640 + 410,  # 33,450
    # 784*300+300 = 235,500; 300*10+10 = 3,010
    "mlp-300-sigmoid": 235_500 + 3_010,  # 238,510
    # conv1 32*1*9+32 = 320, BN 2*32 = 64; conv2 64*32*9+64 = 18,496, BN 2*64 = 128; 8 -> 4 -> 2,
    # flatten 64*2*2 = 256; fc1 256*128+128 = 32,896; head 128*10+10 = 1,290
    "digits-cnn": 320 + 64 + 18_496 + 128 + 32_896 + 1_290,  # 53,194
    # conv 16*3*9+16 = 448; 32*16*9+32 = 4,640; 64*32*9+64 = 18,496; 32 -> 16 -> 8 -> 4, flatten 64*16 = 1,024
    # fc1 1024*256+256 = 262,400; fc2 256*64+64 = 16,448; head 64*10+10 = 650
    "svhn-cnn": 448 + 4_640 + 18_496 + 262_400 + 16_448 + 650,  # 303,082
    # 64*128+128 = 8,320; 128*64+64 = 8,256; 64*64+64 = 4,160; 64*32+32 = 2,080; 32*10+10 = 330
    "digits-mlp": 8_320 + 8_256 + 4_160 + 2_080 + 330,  # 23,146
}


@pytest.mark.parametrize("name, expected", PARAM_COUNTS.items())
def test_hand_calculated_parameter_counts(name, expected):
    model = create_model(name, MODELS.get(name).input_shape, 10)
    assert count_parameters(model) == expected


def test_headline_counts():
    assert PARAM_COUNTS["cnn-tiny"] == 2_710 and PARAM_COUNTS["lenet"] == 431_080
    assert PARAM_COUNTS["mlp-40-40"] == 33_450


def test_cnn_tiny_macs_by_hand():
    summary = summarize(create_model("cnn-tiny", (1, 28, 28), 10), (1, 28, 28))
    macs = {r.name: r.macs for r in summary.rows if r.macs}
    # conv1: 16*28*28 outputs * (1*3*3) = 112,896; conv2: 4*14*14 outputs * (16*3*3) = 112,896
    # head: 196*10 = 1,960
    assert macs == {"conv1": 112_896, "conv2": 112_896, "head": 1_960}
    assert summary.macs == 227_752
    # the max pool runs before the ReLU (they commute): conv1, pool1, act1
    assert [(r.name, r.output_shape) for r in summary.rows][:3] == \
        [("conv1", (16, 28, 28)), ("pool1", (16, 14, 14)), ("act1", (16, 14, 14))]


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_max_pool_before_a_monotonic_activation_changes_nothing(activation: str) -> None:
    torch.manual_seed(0)
    model = create_model("cnn:8-16/k3/bn/fc32", (1, 12, 12), 10, activation=activation)
    names = list(model._modules)
    assert names.index("pool1") < names.index("act1")
    textbook = torch.nn.Sequential(*[model._modules[n] for n in _textbook_order(names)])
    x = torch.randn(16, 1, 12, 12, dtype=torch.float64)
    model.double()
    a, b = model(x), textbook(x)
    assert torch.equal(a, b)
    grads = [torch.autograd.grad(out.square().sum(), list(model.parameters())) for out in (a, b)]
    assert all(torch.equal(g1, g2) for g1, g2 in zip(*grads))


def _textbook_order(names: list[str]) -> list[str]:
    """conv, [bn,] act, pool: swap each pool{i} back behind its act{i}."""
    order = list(names)
    for i, n in enumerate(names):
        if n.startswith("pool") and order[i + 1] == "act" + n[4:]:
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


def test_gelu_and_avg_pool_keep_the_textbook_order() -> None:
    for spec, activation in (("cnn:8/k3/fc16", "gelu"), ("cnn:8/k3/avg/fc16", "relu")):
        names = list(create_model(spec, (1, 12, 12), 10, activation=activation)._modules)
        assert names.index("act1") < names.index("pool1"), (spec, activation)


def test_summary_restores_modes_and_formats():
    model = create_model("cnn-small", (1, 28, 28), 10, dropout=0.5, batch_norm=True)
    model.train()
    model.bn1.eval()  # a mixed state must survive too
    summary = summarize(model, (1, 28, 28))
    assert model.training and not model.bn1.training and model.conv1.training
    text = format_summary(summary)
    assert f"{summary.params:,}" in text and "conv1" in text and "BatchNorm2d" in text
    assert text.splitlines()[-1].startswith("total")
    frozen = create_model("mlp-40-40", (1, 28, 28), 10)
    frozen.fc1.requires_grad_(False)
    summary = summarize(frozen, (1, 28, 28))
    assert summary.trainable_params == 33_450 - 31_400
    assert "trainable params: 2,050" in format_summary(summary)


def test_summary_text_and_report_table_show_the_same_rows():
    summary = summarize(create_model("cnn-tiny", (1, 28, 28), 10), (1, 28, 28))
    lines = format_summary(summary).splitlines()
    assert lines[1] == lines[-2] and set(lines[1]) == {"-", " "}  # a rule under the header and above the total
    assert lines[-1].split() == ["total", "1x28x28", "in", "2,710", "227,752"]
    table = layer_table(summary)  # the report's per-layer table: the same rows, then the total
    assert table.cells()[:-1] == [line.split() for line in lines[2:-2]]
    assert table.cells()[-1] == ["total", "", "1x28x28 in", "2,710", "227,752"]
    assert table.numeric() == [False, False, False, True, True]


# --- builder -------------------------------------------------------------------------------------

def test_mlp_layers_and_options():
    model = build_model(parse_spec("mlp:32-16/tanh/bn/drop0.25"), (1, 8, 8), 3)
    assert list(dict(model.named_children())) == [
        "flatten", "fc1", "bn1", "act1", "drop1", "fc2", "bn2", "act2", "drop2", "head"]
    assert isinstance(model.act1, nn.Tanh) and isinstance(model.bn1, nn.BatchNorm1d)
    assert model.drop2.p == 0.25 and model.fc1.in_features == 64 and model.head.out_features == 3


def test_linear_mlp_is_logistic_regression():
    model = create_model("mlp:linear", (1, 4, 4), 5)
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear]
    assert count_parameters(model) == 16 * 5 + 5


def test_cnn_layers_and_options():
    model = build_model(parse_spec("cnn:4-8/k5/p0/avg/pool3/gelu/bn/drop0.5/fc12"), (2, 30, 30), 4)
    assert list(dict(model.named_children())) == [
        "conv1", "bn1", "act1", "pool1", "conv2", "bn2", "act2", "pool2",
        "flatten", "fc1", "fc_act1", "fc_drop1", "head"]
    assert isinstance(model.pool1, nn.AvgPool2d) and model.pool1.kernel_size == 3
    assert isinstance(model.act2, nn.GELU) and isinstance(model.bn2, nn.BatchNorm2d)
    assert model.conv1.padding == (0, 0) and model.conv1.bias is not None
    # 30 -k5-> 26 -pool3-> 8 -k5-> 4 -pool3-> 1
    assert model.fc1.in_features == 8 and model(torch.randn(2, 2, 30, 30)).shape == (2, 4)


def test_nopool_and_same_padding():
    model = create_model("cnn:3-5/k5/nopool", (1, 9, 9), 2)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model)
    assert model.conv1.padding == (2, 2) and model.head.in_features == 5 * 9 * 9


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_builds(activation):
    model = create_model("mlp:8", (1, 2, 2), 2, activation=activation)
    if activation == "none":  # no layer at all: Linear straight into Linear
        assert [type(m).__name__ for m in model] == ["Flatten", "Linear", "Linear"]
    else:
        assert type(model.act1) is ACTIVATION_LAYERS[activation]


def test_too_small_input_names_the_layer():
    with pytest.raises(SpecError, match=r"^model spec 'cnn:16-64/k3/p0' on 1x8x8 input: pool2 output would "
                                        r"be 0x0 \(its input is 1x1\)$"):
        create_model("cnn:16-64/k3/p0", (1, 8, 8), 10)
    with pytest.raises(SpecError, match="conv1 output would be 0x0"):
        create_model("lenet", (1, 4, 4), 10)


@pytest.mark.parametrize("shape, classes", [((28, 28), 10), ((1, 0, 28), 10), ((1, 28, 28), 0)])
def test_bad_input_shape_or_classes(shape, classes):
    with pytest.raises(ConfigError):
        create_model("mlp-40-40", shape, classes)


@settings(max_examples=40, deadline=None)
@given(widths=st.lists(st.integers(1, 4), min_size=1, max_size=3), k=st.integers(1, 5),
       pad=st.one_of(st.none(), st.integers(0, 2)), pool=st.sampled_from(["max", "avg", "none"]),
       size=st.integers(1, 20))
def test_shape_arithmetic_matches_forward(widths, k, pad, pool, size):
    pad = pad if pad is not None or k % 2 else 0
    spec = ModelSpec("cnn", tuple(widths), kernel_size=k, padding=pad, pool=pool)
    try:
        model = build_model(spec, (1, size, size), 3)
    except SpecError:
        # The error must be right: a real forward through the same layers without a head fails.
        layers = [nn.Conv2d(1, 1, k, padding=k // 2 if pad is None else pad)] * len(widths)
        with pytest.raises(RuntimeError):
            x = torch.zeros(1, 1, size, size)
            for conv in layers:
                x = conv(x)
                x = nn.MaxPool2d(2)(x) if pool != "none" else x
        return
    assert model(torch.zeros(2, 1, size, size)).shape == (2, 3)


# --- spec strings --------------------------------------------------------------------------------

def test_parse_examples():
    assert parse_spec("mlp:128-64-32") == ModelSpec("mlp", (128, 64, 32))
    assert parse_spec("mlp:300/sigmoid") == ModelSpec("mlp", (300,), activation="sigmoid")
    assert parse_spec("cnn:16-32-64/k3/fc256-128") == ModelSpec("cnn", (16, 32, 64), fc=(256, 128))
    assert parse_spec("cnn:20-50/k5/p0/fc500") == ModelSpec("cnn", (20, 50), (500,), 5, 0)
    assert parse_spec("cnn:16-4/k3/p1") == ModelSpec("cnn", (16, 4), padding=1)
    assert parse_spec("mlp:") == parse_spec("mlp:linear") == ModelSpec("mlp", ())
    assert parse_spec("cnn:8/valid").padding == 0 and parse_spec("cnn:8/k5/same").padding is None
    assert parse_spec("cnn:8/nopool").pool == "none"
    assert parse_spec(" cnn:8/bn/drop.5 ") == ModelSpec("cnn", (8,), batch_norm=True, dropout=0.5)


def test_options_in_any_order():
    options = ["k5", "p1", "avg", "pool3", "fc7-6", "tanh", "bn", "drop0.1"]
    expected = parse_spec("cnn:4/" + "/".join(options))
    for perm in itertools.islice(itertools.permutations(options), 0, 5000, 97):
        assert parse_spec("cnn:4/" + "/".join(perm)) == expected


def _cnn_specs(kernel_size, padding):
    return st.builds(
        ModelSpec, kind=st.just("cnn"),
        widths=st.lists(st.integers(1, 512), min_size=1, max_size=4).map(tuple),
        fc=st.lists(st.integers(1, 2048), max_size=3).map(tuple), kernel_size=kernel_size, padding=padding,
        pool=st.sampled_from(["max", "avg", "none"]), pool_size=st.integers(1, 4),
        activation=st.sampled_from(ACTIVATIONS), dropout=st.floats(0, 1, exclude_max=True),
        batch_norm=st.booleans())


specs = st.one_of(
    st.builds(ModelSpec, kind=st.just("mlp"), widths=st.lists(st.integers(1, 2048), max_size=4).map(tuple),
              activation=st.sampled_from(ACTIVATIONS), dropout=st.floats(0, 1, exclude_max=True),
              batch_norm=st.booleans()),
    _cnn_specs(st.sampled_from([1, 3, 5, 7]), st.none()),  # "same" padding needs an odd kernel
    _cnn_specs(st.integers(1, 8), st.integers(0, 5)),
)


@given(specs)
def test_round_trip(spec):
    text = spec.to_string()
    assert parse_spec(text) == spec
    assert parse_spec(text).to_string() == text == str(spec)


@pytest.mark.parametrize("text, message", [
    ("cnn:16-32/k0", "model spec 'cnn:16-32/k0': token 'k0': kernel size must be >= 1"),
    ("cnn:16-32/k", "token 'k': kernel size '' is not a whole number"),
    ("cnn:16/k4", "token 'k4': 'same' padding needs an odd kernel size"),
    ("cnn:16/foo", "token 'foo': unknown option. Valid: k<int>, p<int>"),
    ("cnn:16//k3", "token '': empty option"),
    ("cnn:16/k3/k5", "token 'k5': kernel size already given by 'k3'"),
    ("cnn:16/drop1", "token 'drop1': dropout must be a probability in [0, 1)"),
    ("cnn:16/dropx", "token 'dropx': dropout 'x' is not a number"),
    ("cnn:16/pool0", "token 'pool0': pool size must be >= 1"),
    ("cnn:16/p-1", "token 'p-1': padding '-1' is not a whole number"),
    ("cnn:16-x-8", "token '16-x-8': width 'x' is not a whole number"),
    ("cnn:16-0", "token '16-0': width must be >= 1"),
    ("cnn:/k3", "a cnn needs at least one conv width"),
    ("mlp:16/k3", "token 'k3': kernel size only applies to cnn specs"),
    ("mlp:16/fc10", "token 'fc10': fc width only applies to cnn specs"),
    ("mlp:0", "token '0': width must be >= 1; use 'mlp:linear'"),
    ("rnn:16", "token 'rnn': unknown kind. Valid: mlp, cnn"),
    ("lenet", "model spec 'lenet': expected '<kind>:<widths>"),
])
def test_spec_errors_point_at_the_token(text, message):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert message in str(info.value)
    assert str(info.value).startswith(f"model spec {text!r}") and "\n" not in str(info.value)


def test_replace_validates():
    spec = parse_spec("cnn:16-32")
    assert spec.replace(dropout=0.5, widths=[8]) == ModelSpec("cnn", (8,), dropout=0.5)
    assert spec.replace(pool="nopool", padding="valid").to_string() == "cnn:16-32/k3/p0/nopool"
    with pytest.raises(SpecError, match="unknown model spec field 'kernal_size'. Did you mean 'kernel_size'"):
        spec.replace(kernal_size=5)
    with pytest.raises(SpecError, match="field 'kernel_size' = 0: kernel size must be >= 1"):
        spec.replace(kernel_size=0)
    with pytest.raises(SpecError, match="field 'dropout'"):
        spec.replace(dropout=1.0)
    with pytest.raises(SpecError, match="kernel_size=4: 'cnn:16-32/k3' has 'same' padding .* odd kernel size; "
                                        "give the spec an explicit p<int> or valid"):
        spec.replace(kernel_size=4)
    with pytest.raises(SpecError, match="field 'padding'.*odd kernel_size, got 4"):  # the field check remains
        ModelSpec("cnn", (4,), kernel_size=4)
    with pytest.raises(SpecError, match="field 'fc': only applies to cnn"):
        parse_spec("cnn:4/fc8").replace(kind="mlp")
    with pytest.raises(SpecError, match="field 'batch_norm'"):
        ModelSpec("mlp", (4,), batch_norm=1)


# --- padding and a kernel size given elsewhere (config kernel_size, an experiment axis) ----------

@pytest.mark.parametrize("spec, kernel, padding, canonical, conv_padding, side", [
    ("cnn:16-32/k3/p1/fc128", 5, 1, "cnn:16-32/k5/p1/fc128", 1, 26),  # explicit p1 stays: 28 -> 26
    ("cnn:16-32/k5/p0/fc128", 3, 0, "cnn:16-32/k3/p0/fc128", 0, 26),  # valid stays valid: 28 -> 26
    ("cnn:16-32/fc128", 5, None, "cnn:16-32/k5/fc128", 2, 28),  # no padding given: same, follows k5
    ("cnn:16-32/k3/same/fc128", 5, None, "cnn:16-32/k5/fc128", 2, 28),  # `same` given: the same
    ("cnn:16-32/k5/fc128", 3, None, "cnn:16-32/k3/fc128", 1, 28),
    ("cnn:16-32/k4/p1/fc128", 6, 1, "cnn:16-32/k6/p1/fc128", 1, 25),  # an explicit p<int> allows even kernels
    ("cnn-small", 3, None, "cnn:8-16/k3/fc128", 1, 28),  # the preset is written `same`: it follows k3
])
def test_kernel_size_override_keeps_explicit_padding_and_same_follows_the_kernel(
        spec, kernel, padding, canonical, conv_padding, side):
    resolved = resolve_spec(spec, kernel_size=kernel)
    assert (resolved.kernel_size, resolved.padding, resolved.to_string()) == (kernel, padding, canonical)
    model = create_model(spec, (1, 28, 28), 10, kernel_size=kernel)
    assert model.conv1.kernel_size == (kernel, kernel) and model.conv1.padding == (conv_padding, conv_padding)
    assert model.conv1(torch.zeros(1, 1, 28, 28)).shape[-1] == side == 28 + 2 * conv_padding - kernel + 1
    assert parse_spec(canonical) == resolved  # what the run records rebuilds the same model


@pytest.mark.parametrize("spec", ["cnn:16-32/fc128", "cnn:16/k5/same"])
def test_even_kernel_override_of_same_padding_says_what_to_do(spec):
    with pytest.raises(SpecError, match=r"kernel_size=4: .* has 'same' padding \(no p<int>\), which needs an odd "
                                        "kernel size; give the spec an explicit p<int> or valid"):
        resolve_spec(spec, kernel_size=4)
    assert resolve_spec(spec, kernel_size=4, padding=1).to_string().startswith("cnn:16")  # padding given with it
    assert resolve_spec("cnn:16/k5/p2", kernel_size=4).padding == 2  # explicit: stays, any kernel


# --- presets -------------------------------------------------------------------------------------

def test_resolve_and_create():
    assert resolve_spec("lenet") == parse_spec("cnn:20-50/k5/p0/fc500")
    assert resolve_spec("lenet", dropout=0.2).dropout == 0.2
    assert resolve_spec("mlp:10") == ModelSpec("mlp", (10,))
    assert list_models("mlp-*") == ["mlp-300-sigmoid", "mlp-40-40", "mlp-456-128"]
    assert {"lenet", "cnn-tiny", "cnn-small", "digits-mlp", "digits-cnn", "svhn-cnn"} <= set(list_models())
    with pytest.raises(UnknownNameError, match="unknown model 'lenett'. Did you mean 'lenet'"):
        resolve_spec("lenett")
    with pytest.raises(SpecError):
        create_model("lenet", (1, 28, 28), 10, pool="median")
