"""A hostile-input pass over every command (issue 25): one table, one line per bad input.

Each case runs `tinyvision ARGS` in-process (test_badinput.cli) in a fresh folder holding a copy
of one small finished run ({run}) and, where a case names it, of a finished one-run experiment
({exp}). A case that must fail exits with its code (2: configuration or usage, 1: files and
data) and one stderr line, without a traceback, naming what was wrong; every file that was there
before the command is byte-identical afterwards (nothing already written is lost). Names with
spaces and non-ASCII letters must work: those cases expect exit 0.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from test_badinput import cli, small_run, write_pngs  # noqa: F401 - small_run: a fixture used below

from tinyvision.cli import main

Setup = Callable[[Path], None]
CONFIG_ERROR, FILE_ERROR = 2, 1  # exit codes: configuration or usage / files and data
NO_CHMOD = not hasattr(os, "geteuid") or os.geteuid() == 0  # root reads a chmod 000 folder anyway
TINY = ("--model", "mlp:16", "--epochs", "1", "threads=1", "--quiet", "--no-report")  # when it would train
EXP = 'base: {dataset: digits, model: "mlp:16", epochs: 1, threads: 1}\nrepeats: 1\n'
TUNE = 'base: {dataset: digits, model: "mlp:16", epochs: 1, threads: 1}\nsearch: {lr: {low: 0.001, high: 0.1}}\n'


class Case(NamedTuple):
    id: str
    args: tuple[str, ...]  # {tmp}: the case's folder, {run}: a finished run there, {exp}: an experiment
    needle: str  # in the one stderr line (code 0: in stdout or stderr)
    code: int = CONFIG_ERROR
    setup: Setup | None = None
    unreadable: bool = False  # relies on chmod: skipped as root (and off POSIX)


# --- setups ------------------------------------------------------------------------------------

def write(name: str, content: str | bytes) -> Setup:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return setup


def both(*setups: Setup) -> Setup:
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)
    return setup


def huge_yaml(name: str, megabytes: int = 50) -> Setup:
    def setup(tmp: Path) -> None:
        line = b"# " + b"x" * 1021 + b"\n"
        with open(tmp / name, "wb") as f:
            f.writelines(line for _ in range(megabytes * 1024))
    return setup


def mkdir(name: str) -> Setup:
    return lambda tmp: (tmp / name).mkdir(parents=True)


def truncate(name: str) -> Setup:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return setup


def remove(name: str) -> Setup:
    return lambda tmp: (tmp / name).unlink()


def replace_with_dir(name: str) -> Setup:
    def setup(tmp: Path) -> None:
        (tmp / name).unlink()
        (tmp / name).mkdir()
    return setup


def append(name: str, text: str) -> Setup:
    def setup(tmp: Path) -> None:
        with open(tmp / name, "a") as f:
            f.write(text)
    return setup


def edit(name: str, old: str, new: str) -> Setup:
    def setup(tmp: Path) -> None:
        path = tmp / name
        text = path.read_text()
        assert old in text, (old, text)
        path.write_text(text.replace(old, new))
    return setup


def relabel(name: str, **changes: object) -> Setup:
    """Rewrite a safetensors file's header metadata (JSON values), as another version might."""
    def setup(tmp: Path) -> None:
        path = tmp / name
        raw = path.read_bytes()
        size = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + size])
        header["__metadata__"].update({k: json.dumps(v) for k, v in changes.items()})
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size:])
    return setup


def in_header(name: str, old: str, new: str) -> Setup:
    """Replace text of the same length in a safetensors file's JSON header (a format name)."""
    def setup(tmp: Path) -> None:
        path = tmp / name
        raw = path.read_bytes()
        end = 8 + int.from_bytes(raw[:8], "little")
        assert len(old) == len(new) and old.encode() in raw[8:end], old
        path.write_bytes(raw[:end].replace(old.encode(), new.encode()) + raw[end:])
    return setup


def pngs(folder: str, count: int = 6) -> Setup:
    def setup(tmp: Path) -> None:
        write_pngs(tmp / folder, count)
    return setup


def class_folders(root: str, *classes: str) -> Setup:
    def setup(tmp: Path) -> None:
        for name in classes:
            write_pngs(tmp / root / name, 6)
    return setup


def rename(old: str, new: str) -> Setup:
    def setup(tmp: Path) -> None:
        (tmp / old).rename(tmp / new)
    return setup


def chmod(name: str, mode: int) -> Setup:
    return lambda tmp: (tmp / name).chmod(mode)


def png_bomb(name: str) -> Setup:
    """A PNG whose header claims 100,000 x 100,000 pixels (a decompression bomb), 60 bytes long."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    body = chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
    return write(name, b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


# --- the cases ---------------------------------------------------------------------------------

OUT = ("--out", "{tmp}/runs")

CASES = [
    # numbers out of range
    Case("train --epochs -1", ("train", "--epochs", "-1", *OUT), "'epochs'"),
    Case("train lr=0", ("train", "lr=0", *OUT), "'lr'"),
    Case("train lr=.inf", ("train", "lr=.inf", *OUT), "'lr'"),
    Case("train --batch-size 0", ("train", "--batch-size", "0", *OUT), "'batch_size'"),
    Case("train val_size=2.0", ("train", "val_size=2.0", *OUT), "'val_size'"),
    Case("train epochs=10**12", ("train", f"epochs={10**12}", *OUT), "'epochs'"),
    Case("train seed=-1", ("train", "seed=-1", *OUT), "'seed'"),
    Case("train --folds 1", ("train", "--folds", "1", *TINY, *OUT), "folds"),
    Case("train --folds 1000", ("train", "--folds", "1000", *TINY, *OUT), "folds"),
    Case("train --resume RUN epochs=10**12", ("train", "--resume", "{run}", f"epochs={10**12}"), "'epochs'"),
    Case("compare --repeats 0", ("compare", "mlp:16", "--repeats", "0", *OUT), "--repeats"),
    Case("run --shard 3/2", ("run", "{tmp}/exp.yaml", "--shard", "3/2", *OUT), "shard",
         setup=write("exp.yaml", EXP)),
    Case("run: repeats: 0", ("run", "{tmp}/exp.yaml", *OUT), "repeats",
         setup=write("exp.yaml", EXP.replace("repeats: 1", "repeats: 0"))),
    Case("tune: trials: 0", ("tune", "{tmp}/t.yaml", *OUT), "trials", setup=write("t.yaml", TUNE + "trials: 0\n")),
    Case("lr-find --min-lr 1 --max-lr 0.1", ("lr-find", "--min-lr", "1", "--max-lr", "0.1", *TINY, *OUT),
         "min"),
    Case("lr-find --max-lr nan", ("lr-find", "--max-lr", "nan", *TINY, *OUT), "max_lr"),
    Case("lr-find --min-lr -1", ("lr-find", "--min-lr", "-1", *TINY, *OUT), "min"),
    Case("doctor --batch-size 0", ("doctor", "--batch-size", "0"), "--batch-size"),
    Case("show digits val_size=-3", ("show", "digits", "val_size=-3", "--out", "{tmp}/d.png"), "'val_size'"),
    Case("summary cnn:0", ("summary", "cnn:0"), "cnn:0"),
    Case("predict --top 0", ("predict", "{run}", "{tmp}/pngs", "--top", "0"), "--top", setup=pngs("pngs", 1)),

    # wrong types
    Case("train epochs=abc", ("train", "epochs=abc", *OUT), "'epochs'"),
    Case("train --epochs abc", ("train", "--epochs", "abc", *OUT), "--epochs"),
    Case("train lr=[1]", ("train", "lr=[1]", *OUT), "'lr'"),
    Case("train model=3", ("train", "model=3", "--epochs", "1", *OUT), "model"),
    Case("train batch_size=1.5", ("train", "batch_size=1.5", *OUT), "'batch_size'"),
    Case("train normalize=3", ("train", "normalize=3", *OUT), "'normalize'"),
    Case("train epochs=true", ("train", "epochs=true", *OUT), "'epochs'"),
    Case("config: epochs: [1, 2]", ("train", "--config", "{tmp}/c.yaml", *OUT), "'epochs'",
         setup=write("c.yaml", "epochs: [1, 2]\n")),
    Case("config: a list", ("train", "--config", "{tmp}/c.yaml", *OUT), "c.yaml",
         setup=write("c.yaml", "- epochs\n- 3\n")),
    Case("run: base: 3", ("run", "{tmp}/exp.yaml", *OUT), "base", setup=write("exp.yaml", "base: 3\n")),
    Case("run: grid: {lr: 0.1}", ("run", "{tmp}/exp.yaml", *OUT), "grid.lr",
         setup=write("exp.yaml", EXP + "grid: {lr: 0.1}\n")),
    Case("tune: search: {lr: hello}", ("tune", "{tmp}/t.yaml", *OUT), "lr",
         setup=write("t.yaml", TUNE.replace("{low: 0.001, high: 0.1}", "hello"))),
    Case("predict --top abc", ("predict", "{run}", "{tmp}", "--top", "abc"), "--top"),
    Case("summary --model-args [1, 2]", ("summary", "mlp:16", "--model-args", "[1, 2]"), "--model-args"),
    Case("summary --model-args '[1'", ("summary", "mlp:16", "--model-args", "[1"), "--model-args"),
    Case("evaluate --device tpu", ("evaluate", "{run}", "--device", "tpu"), "tpu"),
    Case("evaluate --split xyz", ("evaluate", "{run}", "--split", "xyz"), "--split"),
    Case("export --format xyz", ("export", "{run}", "--format", "xyz"), "xyz"),
    Case("doctor lr=abc", ("doctor", "lr=abc"), "'lr'"),

    # unknown fields
    Case("train epochz=3", ("train", "epochz=3", *OUT), "Did you mean 'epochs'"),
    Case("config: epochz: 3", ("train", "--config", "{tmp}/c.yaml", *OUT), "epochz",
         setup=write("c.yaml", "epochz: 3\n")),
    Case("run: grdi:", ("run", "{tmp}/exp.yaml", *OUT), "grdi", setup=write("exp.yaml", EXP + "grdi: {lr: [0.1]}\n")),
    Case("run EXP foo=1", ("run", "{tmp}/exp.yaml", "foo=1", *OUT), "foo", setup=write("exp.yaml", EXP)),
    Case("tune: trails: 3", ("tune", "{tmp}/t.yaml", *OUT), "trails", setup=write("t.yaml", TUNE + "trails: 3\n")),
    Case("tune: search: {lrr: ...}", ("tune", "{tmp}/t.yaml", *OUT), "lrr",
         setup=write("t.yaml", TUNE.replace("{lr:", "{lrr:"))),
    Case("show digits foo=1", ("show", "digits", "foo=1"), "foo"),
    Case("train --frobnicate", ("train", "--frobnicate", *OUT), "--frobnicate"),

    # empty files
    Case("train --config EMPTY", ("train", "--config", "{tmp}/c.yaml", *TINY, *OUT), "c.yaml",
         setup=write("c.yaml", "")),
    Case("run EMPTY", ("run", "{tmp}/exp.yaml", "--repeats", "1", *OUT), "exp.yaml", setup=write("exp.yaml", "")),
    Case("tune EMPTY", ("tune", "{tmp}/t.yaml", *OUT), "t.yaml is empty", setup=write("t.yaml", "")),
    Case("predict EMPTY.png", ("predict", "{run}", "{tmp}/a.png"), "a.png", FILE_ERROR, write("a.png", b"")),
    Case("evaluate: empty config.yaml", ("evaluate", "{run}"), "config.yaml", FILE_ERROR, write("run/config.yaml", "")),
    Case("evaluate: empty result.json", ("evaluate", "{run}"), "result.json", FILE_ERROR,
         write("run/result.json", "")),
    Case("predict: empty model.safetensors", ("predict", "{run}", "{tmp}/pngs"), "model.safetensors", FILE_ERROR,
         both(write("run/model.safetensors", b""), pngs("pngs", 1))),
    Case("train --resume: empty checkpoint", ("train", "--resume", "{run}", "epochs=2"), "checkpoint.safetensors",
         FILE_ERROR, write("run/checkpoint.safetensors", b"")),

    # huge and binary files
    Case("train --config 50 MB", ("train", "--config", "{tmp}/c.yaml", *OUT), "byte limit", setup=huge_yaml("c.yaml")),
    Case("run 50 MB", ("run", "{tmp}/exp.yaml", *OUT), "byte limit", setup=huge_yaml("exp.yaml")),
    Case("tune 50 MB", ("tune", "{tmp}/t.yaml", *OUT), "byte limit", setup=huge_yaml("t.yaml")),
    Case("train --config BINARY", ("train", "--config", "{tmp}/c.yaml", *OUT), "not a text file",
         setup=write("c.yaml", bytes(range(256)) * 64)),
    Case("predict PNG bomb", ("predict", "{run}", "{tmp}/bomb.png"), "bomb.png", FILE_ERROR, png_bomb("bomb.png")),

    # a directory where a file is expected, or a file where a folder is
    Case("train --config DIR", ("train", "--config", "{tmp}", *OUT), "is a directory"),
    Case("run DIR", ("run", "{tmp}", *OUT), "is a directory"),
    Case("tune DIR", ("tune", "{tmp}", *OUT), "is a directory"),
    Case("predict: model.safetensors a folder", ("predict", "{run}", "{tmp}/pngs"), "model.safetensors", FILE_ERROR,
         both(replace_with_dir("run/model.safetensors"), pngs("pngs", 1))),
    Case("predict --csv DIR", ("predict", "{run}", "{tmp}/pngs", "--csv", "{tmp}"), "--csv", FILE_ERROR,
         pngs("pngs", 1)),
    Case("export --out DIR", ("export", "{run}", "--format", "torchscript", "--out", "{tmp}"), "already exists",
         FILE_ERROR),
    Case("show --out DIR", ("show", "digits", "--out", "{tmp}"), "{tmp}", FILE_ERROR),
    Case("train --run-dir FILE", ("train", "--run-dir", "{tmp}/f.txt", *TINY), "f.txt", FILE_ERROR,
         write("f.txt", "notes")),
    Case("train --out FILE", ("train", *TINY, "--out", "{tmp}/f.txt"), "f.txt", FILE_ERROR, write("f.txt", "notes")),
    Case("train dataset=folder:FILE", ("train", "--dataset", "folder:{tmp}/f.txt", *TINY, *OUT), "f.txt",
         FILE_ERROR, write("f.txt", "notes")),
    Case("train dataset=npz:DIR", ("train", "--dataset", "npz:{tmp}", *TINY, *OUT), "{tmp}", FILE_ERROR),
    Case("datasets --data-dir FILE", ("datasets", "--data-dir", "{tmp}/f.txt"), "f.txt", FILE_ERROR,
         write("f.txt", "notes")),
    Case("run --out FILE", ("run", "{tmp}/exp.yaml", "--out", "{tmp}/f.txt"), "f.txt", FILE_ERROR,
         both(write("exp.yaml", EXP), write("f.txt", "notes"))),
    Case("train --run-dir FILE/sub", ("train", "--run-dir", "{tmp}/f.txt/sub", *TINY), "f.txt/sub", FILE_ERROR,
         write("f.txt", "notes")),
    Case("show --out MISSING/x.png", ("show", "digits", "--out", "{tmp}/nope/x.png"), "nope", FILE_ERROR),
    Case("tune --storage GARBAGE", ("tune", "{tmp}/t.yaml", "--storage", "{tmp}/j.journal", *OUT), "j.journal",
         FILE_ERROR, both(write("t.yaml", TUNE), write("j.journal", bytes(range(256)) * 4))),
    Case("tune --storage DIR", ("tune", "{tmp}/t.yaml", "--storage", "{tmp}", *OUT), "{tmp}", FILE_ERROR,
         write("t.yaml", TUNE)),

    # unreadable folders and files (chmod: not as root)
    Case("train folder: a class folder chmod 000", ("train", "--dataset", "folder:{tmp}/pets", *TINY, *OUT), "cat: cannot read the folder",
         FILE_ERROR, both(class_folders("pets", "cat", "dog"), chmod("pets/cat", 0)), unreadable=True),
    Case("train folder: the folder chmod 000", ("train", "--dataset", "folder:{tmp}/pets", *TINY, *OUT), "pets: cannot read the folder",
         FILE_ERROR, both(class_folders("pets", "cat", "dog"), chmod("pets", 0)), unreadable=True),
    Case("predict FOLDER chmod 000", ("predict", "{run}", "{tmp}/pngs"), "pngs: cannot read the folder", FILE_ERROR,
         both(pngs("pngs", 2), chmod("pngs", 0)), unreadable=True),
    Case("predict FOLDER, a sub-folder chmod 000", ("predict", "{run}", "{tmp}/pngs"), "sub: cannot read the folder",
         FILE_ERROR, both(pngs("pngs", 2), pngs("pngs/sub", 2), chmod("pngs/sub", 0)), unreadable=True),
    Case("train --config chmod 000", ("train", "--config", "{tmp}/c.yaml", *OUT), "c.yaml",
         setup=both(write("c.yaml", "epochs: 1\n"), chmod("c.yaml", 0)), unreadable=True),
    Case("train --out chmod 555", ("train", *TINY, "--out", "{tmp}/ro"), "ro", FILE_ERROR,
         both(mkdir("ro"), chmod("ro", 0o555)), unreadable=True),

    # names with spaces and non-ASCII letters: these work
    Case("train --config/--out with spaces, é", ("train", "--config", "{tmp}/cönfig dir/my config.yaml", *TINY,
                                                 "--out", "{tmp}/mon run é"), "completed: ", 0,
         write("cönfig dir/my config.yaml", 'dataset: digits\nmodel: "mlp:16"\n')),
    Case("train folder: classes 'chat noir', 'chien é'",
         ("train", "--dataset", "folder:{tmp}/ph otos é", "image_size=8", "channels=1", *TINY, *OUT),
         "chat noir 6, chien é 6", 0, class_folders("ph otos é", "chat noir", "chien é")),
    Case("predict a folder 'chien é'", ("predict", "{run}", "{tmp}/ph otos/chien é"), "chien é/img00.png", 0,
         class_folders("ph otos", "chien é")),
    Case("evaluate RUN 'mon run é'", ("evaluate", "{tmp}/mon run é"), "accuracy", 0, rename("run", "mon run é")),
    Case("tune 'my tune é.yaml'", ("tune", "{tmp}/my tune é.yaml", "--trials", "1", "--quiet", *OUT),
         "my_tune", 0, write("my tune é.yaml", TUNE)),
    Case("run 'my sweep é.yaml'", ("run", "{tmp}/my sweep é.yaml", "--quiet", "--no-report", *OUT),
         "results in", 0, write("my sweep é.yaml", EXP)),

    # missing runs, and folders that are not runs
    Case("evaluate MISSING", ("evaluate", "{tmp}/nope"), "nope", FILE_ERROR),
    Case("report MISSING", ("report", "{tmp}/nope"), "nope", FILE_ERROR),
    Case("predict MISSING", ("predict", "{tmp}/nope", "{tmp}"), "nope", FILE_ERROR),
    Case("export MISSING", ("export", "{tmp}/nope"), "nope", FILE_ERROR),
    Case("train --resume MISSING", ("train", "--resume", "{tmp}/nope"), "nope", FILE_ERROR),
    Case("evaluate EMPTY DIR", ("evaluate", "{tmp}/empty"), "empty", FILE_ERROR, mkdir("empty")),
    Case("report EMPTY DIR", ("report", "{tmp}/empty"), "empty", FILE_ERROR, mkdir("empty")),
    Case("evaluate NOT A RUN", ("evaluate", "{tmp}/other"), "other", FILE_ERROR, write("other/notes.txt", "hi")),
    Case("predict: no model.safetensors", ("predict", "{run}", "{tmp}/pngs"), "model.safetensors", FILE_ERROR,
         both(remove("run/model.safetensors"), pngs("pngs", 1))),
    Case("export: unfinished run", ("export", "{run}", "--format", "torchscript"), "run", FILE_ERROR,
         both(remove("run/result.json"), remove("run/model.safetensors"))),
    Case("train --run-dir EXISTING RUN", ("train", "--run-dir", "{run}", *TINY), "already holds a run", FILE_ERROR),
    Case("train --resume FINISHED RUN without a checkpoint", ("train", "--resume", "{run}", "epochs=2"),
         "holds no checkpoint.safetensors", FILE_ERROR, remove("run/checkpoint.safetensors")),
    Case("train --resume FINISHED RUN: damaged checkpoint", ("train", "--resume", "{run}"), "checkpoint.safetensors",
         FILE_ERROR, truncate("run/checkpoint.safetensors")),
    Case("train --resume FINISHED RUN (nothing to add)", ("train", "--resume", "{run}", "--quiet", "--no-report"),
         "nothing to resume", 0),

    # runs from another version
    Case("evaluate: config.yaml with a future field", ("evaluate", "{run}"), "config.yaml: unknown config field 'mixup'",
         FILE_ERROR, append("run/config.yaml", "mixup: 0.2\n")),
    Case("evaluate: config.yaml with a future value", ("evaluate", "{run}"), "config.yaml: config field 'optimizer'",
         FILE_ERROR, edit("run/config.yaml", "optimizer: adam", "optimizer: lion")),
    Case("export: config.yaml and result.json of tinyvision 9", ("export", "{run}", "--format", "torchscript"),
         "written by tinyvision 9.0.0", FILE_ERROR,
         both(append("run/config.yaml", "mixup: 0.2\n"), edit("run/result.json", '"tinyvision": "', '"tinyvision": "9.0.0", "was": "'))),
    Case("evaluate: result.json a list", ("evaluate", "{run}"), "result.json", FILE_ERROR,
         write("run/result.json", "[1, 2]")),
    Case("report: result.json a list", ("report", "{run}"), "result.json", FILE_ERROR,
         write("run/result.json", "[1, 2]")),
    Case("predict: weights of a future format", ("predict", "{run}", "{tmp}/pngs"), "tinyvision-weights-9",
         FILE_ERROR, both(in_header("run/model.safetensors", "tinyvision-weights-1", "tinyvision-weights-9"),
                          pngs("pngs", 1))),
    Case("train --resume: checkpoint of a future format", ("train", "--resume", "{run}", "epochs=2"),
         "tinyvision-checkpoint-9", FILE_ERROR,
         in_header("run/checkpoint.safetensors", "tinyvision-checkpoint-3", "tinyvision-checkpoint-9")),
    Case("evaluate: safetensors without tinyvision metadata", ("evaluate", "{run}"), "model.safetensors",
         FILE_ERROR, relabel("run/model.safetensors", spec=None)),
    Case("run: exp dir of another experiment", ("run", "{tmp}/exp.yaml", "--exp-dir", "{exp}"),
         "holds a different experiment", FILE_ERROR, write("exp.yaml", EXP.replace("repeats: 1", "repeats: 2"))),
    Case("tune: out dir of another study", ("tune", "{tmp}/t.yaml", *OUT), "holds a different tuning study",
         FILE_ERROR, both(write("t.yaml", TUNE), write("runs/t/tune.yaml", "study: other\n"))),
    Case("export --out EXISTING", ("export", "{run}", "--format", "torchscript", "--out", "{tmp}/m.pt"),
         "already exists", FILE_ERROR, write("m.pt", "mine")),
    Case("predict --csv EXISTING", ("predict", "{run}", "{tmp}/pngs", "--csv", "{tmp}/p.csv"), "already exists",
         FILE_ERROR, both(pngs("pngs", 1), write("p.csv", "mine"))),
    Case("run: exp dir with a damaged experiment.yaml", ("run", "{tmp}/exp.yaml", "--exp-dir", "{exp}"),
         "experiment.yaml", FILE_ERROR, both(write("exp.yaml", EXP), write("exp/experiment.yaml", "base: [\n"))),
    Case("report: exp dir with a future manifest.json", ("report", "{exp}"), "manifest.json", FILE_ERROR,
         write("exp/manifest.json", '{"format": 9, "entries": []}')),

    # damaged files
    Case("evaluate: truncated model.safetensors", ("evaluate", "{run}"), "model.safetensors", FILE_ERROR,
         truncate("run/model.safetensors")),
    Case("predict: truncated model.safetensors", ("predict", "{run}", "{tmp}/pngs"), "model.safetensors",
         FILE_ERROR, both(truncate("run/model.safetensors"), pngs("pngs", 1))),
    Case("export: truncated model.safetensors", ("export", "{run}", "--format", "torchscript"), "model.safetensors",
         FILE_ERROR, truncate("run/model.safetensors")),
    Case("evaluate: binary config.yaml", ("evaluate", "{run}"), "config.yaml", FILE_ERROR,
         write("run/config.yaml", bytes(range(256)))),

    # predict's inputs
    Case("predict EMPTY FOLDER", ("predict", "{run}", "{tmp}/empty"), "empty", FILE_ERROR, mkdir("empty")),
    Case("predict notes.txt", ("predict", "{run}", "{tmp}/notes.txt"), "notes.txt", FILE_ERROR,
         write("notes.txt", "not an image")),
    Case("predict MISSING FILE", ("predict", "{run}", "{tmp}/gone.png"), "gone.png", FILE_ERROR),

    # the other commands
    Case("models NOMATCH", ("models", "zzz"), "zzz"),
    Case("recipes NOMATCH", ("recipes", "zzz"), "zzz"),
    Case("summary NOSUCH", ("summary", "nosuch"), "nosuch"),
    Case("summary --dataset NOSUCH", ("summary", "mlp:16", "--dataset", "nosuch"), "nosuch"),
    Case("doctor --model NOSUCH", ("doctor", "--model", "nosuch"), "nosuch"),
    Case("show NOSUCH", ("show", "nosuch"), "nosuch"),
    Case("show folder:MISSING", ("show", "folder:{tmp}/nope"), "nope", FILE_ERROR),
    Case("compare without models", ("compare", "epochs=1", *OUT), "model"),
    Case("compare --baseline NOSUCH", ("compare", "mlp:16", "--baseline", "nosuch", *TINY[2:], *OUT), "nosuch"),
    Case("run --shard abc", ("run", "{tmp}/exp.yaml", "--shard", "abc", *OUT), "abc", setup=write("exp.yaml", EXP)),
    Case("report --metric xyz", ("report", "{run}", "--metric", "xyz"), "--metric"),
    Case("train --folds with --resume", ("train", "--folds", "2", "--resume", "{run}"), "--resume"),
]


# --- fixtures and the test ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished one-run experiment (digits, mlp:16, 1 epoch), shared read-only."""
    folder = tmp_path_factory.mktemp("hostile-exp")
    (folder / "exp.yaml").write_text(EXP)
    assert main(["run", str(folder / "exp.yaml"), "--exp-dir", str(folder / "exp"), "--quiet", "--no-report"]) == 0
    return folder / "exp"


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder (by relative path)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and os.access(path, os.R_OK):
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            found[str(path.relative_to(folder))] = digest.hexdigest()
    return found


def fill(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{run}", str(tmp / "run")).replace("{exp}", str(tmp / "exp"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, capsys, tmp_path, monkeypatch, request, small_run):  # noqa: F811
    if case.unreadable and NO_CHMOD:
        pytest.skip("chmod does not stop root (or a non-POSIX system) from reading")
    tmp = tmp_path / "case"
    tmp.mkdir()
    shutil.copytree(small_run, tmp / "run")
    if any("{exp}" in a for a in case.args):
        shutil.copytree(request.getfixturevalue("small_experiment"), tmp / "exp")
    if case.setup is not None:
        case.setup(tmp)
    monkeypatch.chdir(tmp)  # a default --out (runs) would land here
    before = snapshot(tmp)
    try:
        rc, out, err = cli(capsys, *(fill(a, tmp) for a in case.args))
    finally:
        for path in [tmp, *tmp.rglob("*")]:  # let pytest remove what a case made unreadable
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
    needle = fill(case.needle, tmp)
    assert "Traceback" not in err, err[-2000:]
    if case.code == 0:
        assert rc == 0, f"rc={rc} err={err[-500:]!r}"
        assert needle in out + err, f"{needle!r} not in {(out + err)[-500:]!r}"
    else:
        assert (rc, err.count("\n"), err.endswith("\n")) == (case.code, 1, True), f"rc={rc} err={err[-600:]!r}"
        assert len(err.strip()) > len("tinyvision: error:"), err
        assert needle in err, f"{needle!r} not in {err!r}"
    after = snapshot(tmp)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert changed == [], f"changed or lost: {changed}"
