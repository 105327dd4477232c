"""tinyvision.yamlfile: every bad YAML input gets one short line, quickly and in bounded memory."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tinyvision import yamlfile
from tinyvision.errors import TinyVisionError
from tinyvision.yamlfile import YamlError, clip, load_yaml, read_yaml_file

ROOT = Path(__file__).resolve().parents[1]
LOADERS = [yamlfile._Loader] + ([yamlfile._FastLoader] if yamlfile._CParser is not None else [])


@pytest.fixture(params=LOADERS, ids=lambda c: c.__name__)
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type:
    """Run a test with the pure-Python loader and (where libyaml exists) the libyaml one."""
    monkeypatch.setattr(yamlfile, "_LOADER", request.param)
    return request.param


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The classic alias bomb: `levels` lists of `width` aliases, width**levels strings in all."""
    names = "abcdefghijklmnop"
    lines = [f"{names[0]}: &{names[0]} [" + ", ".join(['"x"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"{names[i]}: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * width) + "]")
    lines.append(f"epochs: *{names[levels - 1]}")
    return "\n".join(lines) + "\n"


def error_of(text: str, **kwargs: Any) -> str:
    with pytest.raises(YamlError) as info:
        load_yaml(text, source="config.yaml", **kwargs)
    return one_line(str(info.value))


def one_line(message: str) -> str:
    assert len(message.splitlines()) == 1, message
    assert len(message) < 300, message
    return message


# ---------------------------------------------------------------------------------- alias bombs

BOMB_SCRIPT = textwrap.dedent("""
    import resource, sys, time, types
    cap = 1 << 30  # 1 GiB of address space for the whole interpreter
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap if hard == resource.RLIM_INFINITY else min(cap, hard)))
    package = types.ModuleType("tinyvision")  # import yamlfile without tinyvision/__init__ (torch)
    package.__path__ = [sys.argv[1]]
    sys.modules["tinyvision"] = package
    from tinyvision.yamlfile import YamlError, load_yaml
    text = sys.stdin.read()
    start = time.perf_counter()
    try:
        load_yaml(text, source="bomb.yaml")
    except YamlError as exc:
        print(exc)
        print(f"{time.perf_counter() - start:.3f}", file=sys.stderr)
        sys.exit(3)
    sys.exit(0)
""")


def test_billion_laughs_refused_under_a_1_gib_memory_cap() -> None:
    run = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, str(ROOT / "tinyvision")],
                         input=billion_laughs(9, 9), capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 3, run.stderr[-2000:]
    message = one_line(run.stdout.strip())
    assert message.startswith("bomb.yaml line 10: expands to more than 10,000 values through aliases")
    assert "*i" in message and "write the values out" in message
    assert float(run.stderr.strip().splitlines()[-1]) < 5.0  # seconds inside load_yaml


@pytest.mark.parametrize("levels", [7, 8, 9])
def test_billion_laughs_one_line_fast(loader: type, levels: int) -> None:
    start = time.perf_counter()
    message = error_of(billion_laughs(levels, 9))
    assert time.perf_counter() - start < 5.0
    assert message == (f"config.yaml line {levels + 1}: expands to more than 10,000 values through "
                       f"aliases (&anchor/*alias, here *{'abcdefghi'[levels - 1]}); write the values out")


def test_mapping_and_merge_key_bombs_refused(loader: type) -> None:
    maps = "a: &a {x: 1, y: 2, z: 3}\n" + "".join(
        f"{n}: &{n} {{p: *{p}, q: *{p}, r: *{p}, s: *{p}, t: *{p}, u: *{p}}}\n"
        for p, n in zip("abcdefg", "bcdefgh"))
    assert "expands to more than 10,000 values" in error_of(maps)
    merges = "a: &a {x1: 1, x2: 2, x3: 3, x4: 4, x5: 5, x6: 6, x7: 7, x8: 8}\n" + "".join(
        f"{n}: &{n} {{<<: *{p}, k1: *{p}, k2: *{p}, k3: *{p}, k4: *{p}}}\n" for p, n in zip("abcde", "bcdef"))
    merges += "run: {<<: [*f, *e], lr: 1}\n"
    assert "expands to more than 10,000 values" in error_of(merges)


def test_max_nodes_bounds_what_aliases_add(loader: type) -> None:
    text = "base: &base [1, 2, 3, 4]\nrun: [*base, *base, *base]\n"  # aliases add 3 * 5 values
    assert load_yaml(text, max_nodes=15)["run"] == [[1, 2, 3, 4]] * 3
    assert "expands to more than 14 values" in error_of(text, max_nodes=14)


def test_a_long_document_without_aliases_is_not_a_bomb(loader: type) -> None:
    text = "".join(f"k{i}: [{i}, {i}]\n" for i in range(3000))  # 12,001 values, no alias
    assert len(load_yaml(text)) == 3000


@pytest.mark.parametrize("text", ["a: &a [1, *a]\n", "a: &a {b: {c: *a}}\n", "- &x [[*x]]\n"])
def test_recursive_alias_refused(loader: type, text: str) -> None:
    message = error_of(text)
    assert message.startswith("config.yaml line ") and "recursive alias" in message


# ------------------------------------------------------------------------- legitimate aliases


def test_anchors_aliases_and_merge_keys_load(loader: type) -> None:
    text = textwrap.dedent("""\
        base: &base
          lr: 0.1
          epochs: 3
          optimizer: sgd
        tags: &tags [a, b]
        fast:
          <<: *base
          epochs: 5
          tags: *tags
        mixed:
          <<: [*base, {lr: 0.5, seed: 1}]
          seed: 2
        again: {<<: *base}
        """)
    data = load_yaml(text)
    assert data["fast"] == {"lr": 0.1, "epochs": 5, "optimizer": "sgd", "tags": ["a", "b"]}
    assert data["mixed"] == {"lr": 0.1, "epochs": 3, "optimizer": "sgd", "seed": 2}
    assert data["again"] == data["base"] == {"lr": 0.1, "epochs": 3, "optimizer": "sgd"}


def test_chained_merges_override_without_duplicate_errors(loader: type) -> None:
    text = "a: &a {x: 1, y: 1}\nb: &b {<<: *a, x: 2}\nc: {<<: *b, y: 3}\nd: {<<: [*b, *a]}\n"
    assert load_yaml(text) == {"a": {"x": 1, "y": 1}, "b": {"x": 2, "y": 1},
                               "c": {"x": 2, "y": 3}, "d": {"x": 2, "y": 1}}


def test_plain_values(loader: type) -> None:
    assert load_yaml("") is None and load_yaml("# only a comment\n") is None
    assert load_yaml("lr: 0.001\nepochs: 3\nmodel: cnn:16-32\n") == {"lr": 1e-3, "epochs": 3,
                                                                      "model": "cnn:16-32"}
    assert load_yaml("[1, two, 3.0, null, true]") == [1, "two", 3.0, None, True]


# ----------------------------------------------------------------------------- duplicate keys


def test_duplicate_top_level_key(loader: type) -> None:
    text = "dataset: digits\nmodel: mlp\nepochs: 3\nlr: 0.1\nseed: 1\nbatch_size: 32\nepochs: 5\n"
    assert error_of(text) == "config.yaml line 7: duplicate key 'epochs' (first on line 3)"


def test_duplicate_nested_key(loader: type) -> None:
    text = "grid:\n  lr: [0.1, 0.01]\n  seed: [0, 1]\n  lr: [1.0]\nepochs: 2\n"
    assert error_of(text) == "config.yaml line 4: duplicate key 'lr' (first on line 2)"


@pytest.mark.parametrize("text, key, lines", [
    ("a: {x: 1, x: 2}\n", "'x'", (1, 1)),
    ("- one: 1\n- two: 2\n  two: 3\n", "'two'", (3, 2)),
    ("1: a\n0x1: b\n", "1", (2, 1)),  # the same int written twice
    ("<<: {a: 1}\n<<: {b: 2}\n", "'<<'", (2, 1)),  # two merges are written <<: [*a, *b]
])
def test_duplicate_keys_elsewhere(loader: type, text: str, key: str, lines: tuple[int, int]) -> None:
    assert error_of(text) == f"config.yaml line {lines[0]}: duplicate key {key} (first on line {lines[1]})"


def test_duplicate_key_inside_a_merged_anchor(loader: type) -> None:
    text = "base: &base\n  lr: 1\n  lr: 2\nrun:\n  <<: *base\n"
    assert error_of(text) == "config.yaml line 3: duplicate key 'lr' (first on line 2)"


# -------------------------------------------------------------------------------- parse errors


@pytest.mark.parametrize("text, line", [
    ("epochs: 3\nlr: [0.1, 0.2\nseed: 1\n", 3),
    ("a: 1\nb: c: d\n", 2),
    ("a: 1\nb: 'unterminated\n", 3),
    ("a: 1\n\tb: 2\n", 2),
    ("a: 1\n- b\n", 2),
    ("a: 1\nb: *undefined\n", 2),
    ("a: 1\nb: \x07\n", 2),
    ("a: 1\nday: 2024-02-30\n", 2),
    ("a: !!python/object:os.system x\n", 1),
    ("a: 1\n---\nb: 2\n", 2),
    ("a: 1\nb: {<<: 3}\n", 2),
    ("a: 1\nb: {<<: [{x: 1}, 2]}\n", 2),
    ("a: 1\nb: " + "[" * 500 + "]" * 500 + "\n", 2),
])
def test_parse_errors_are_one_line_with_the_line(loader: type, text: str, line: int) -> None:
    message = error_of(text)
    assert message.startswith(f"config.yaml line {line}"), message


def test_error_types() -> None:
    err = YamlError("x.yaml line 1: bad\n  context\nmore")
    assert str(err) == "x.yaml line 1: bad   context more"
    assert isinstance(err, ValueError) and isinstance(err, TinyVisionError) and err.exit_code == 2
    with pytest.raises(TypeError):
        load_yaml(b"a: 1")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- files


def file_error(path: Path, **kwargs: Any) -> str:
    with pytest.raises(YamlError) as info:
        read_yaml_file(path, **kwargs)
    message = one_line(str(info.value))
    assert message.startswith(str(path)), message
    return message


def test_reads_a_yaml_file(tmp_path: Path, loader: type) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("# config\nmodel: digits-cnn\nepochs: 4\n", encoding="utf-8")
    assert read_yaml_file(path) == read_yaml_file(str(path)) == {"model": "digits-cnn", "epochs": 4}
    path.write_text("\ufeffname: é\n", encoding="utf-8")  # a BOM and non-ASCII text are fine
    assert read_yaml_file(path) == {"name": "é"}


def test_file_content_errors_name_the_path_and_line(tmp_path: Path, loader: type) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("épochs: 3\nlr: 1\népochs: 4\n", encoding="utf-8")
    assert file_error(path) == f"{path} line 3: duplicate key 'épochs' (first on line 1)"
    path.write_text(billion_laughs(9, 9))
    assert "expands to more than 10,000 values" in file_error(path)
    path.write_text("é: 1\nb: 2\nc: \x07\n", encoding="utf-8")
    assert file_error(path).startswith(f"{path} line 3:")


def test_directory(tmp_path: Path) -> None:
    assert file_error(tmp_path) == f"{tmp_path}: is a directory, expected a YAML file"


def test_missing_file(tmp_path: Path) -> None:
    assert file_error(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such file"


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xb7\x9c" + os.urandom(4000))
    assert file_error(path) == f"{path}: not a text file (UnicodeDecodeError at byte 10)"
    path.write_bytes(b"a: 1\n\x00\x00\x00")
    assert file_error(path) == f"{path}: not a text file (NUL character at byte 5)"
    path.write_bytes("a: 1\n".encode("utf-16"))
    assert file_error(path) == f"{path}: UTF-16 text; save it as UTF-8"


def test_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: 1\n" + "#" * 1494 + "\n")
    assert file_error(path, max_bytes=1499) == (
        f"{path}: 1,500 bytes, larger than the 1,499-byte limit for a YAML file")
    assert read_yaml_file(path, max_bytes=1500) == {"a": 1}


def test_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    assert file_error(fifo) == f"{fifo}: not a regular file, expected a YAML file"


# ------------------------------------------------------------------------------------------ clip


def test_clip_huge_list_is_fast_and_short() -> None:
    value = list(range(10**7))
    start = time.perf_counter()
    text = clip(value)
    assert time.perf_counter() - start < 0.5
    assert len(text) <= 120 and text == "[0, 1, 2, 3, 4, 5, ...] (10,000,000 items)"


def test_clip_huge_values() -> None:
    huge_string = "x" * 34_000_000
    cases: list[Any] = [huge_string, [huge_string] * 3, {i: [i] * 100 for i in range(10**4)},
                        {"a": [[[[["deep"] * 9] * 9] * 9] * 9]}, 10**20000, b"\0" * 10**6,
                        bytearray(10**6), ["x"] * 10**6, (1,) * 10**6, set(range(10**6))]
    nested: list[Any] = []
    for _ in range(100_000):
        nested = [nested]
    cases.append(nested)
    for value in cases:
        start = time.perf_counter()
        text = clip(value)
        assert time.perf_counter() - start < 0.5, text
        assert len(text) <= 120 and "\n" not in text, text
    assert clip(huge_string).endswith("... (34,000,000 characters)")
    assert clip(["x"] * 10**6) == "['x', 'x', 'x', 'x', 'x', 'x', ...] (1,000,000 items)"


def test_clip_small_values_are_exact() -> None:
    for value in [1, "épochs", None, 1.5, ["a", 1], {"lr": 0.1}, (1,), True]:
        assert clip(value) == repr(value)
    long = list(range(100))
    assert clip(long) == repr(long)[:80] + "... (390 characters)"
    assert clip(long, limit=400) == repr(long)


def test_clip_survives_a_broken_repr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert clip(Broken()) == "<Broken object>"
    assert "Broken" in clip([Broken()] * 1000)
