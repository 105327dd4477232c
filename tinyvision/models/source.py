"""Where a run's model comes from, how each seed's copy is built, and how a finished run's model is
built again.

The `model` field (CLI `--model`, YAML, compare items, experiment axes) names one of:
  - a preset (`digits-cnn`) or a spec (`cnn:16-32/k3/fc128`), built by models.build;
  - a file and a class in it: `path/to/net.py:Net` (importing the file runs its code);
  - an importable class: `package.module:Net` (the current folder is searched first, as `python -m` does).
In Python it may also be an nn.Module class, an instance or a zero-argument factory (`model_from`).

`model_args` go to the class's constructor. A constructor parameter named `in_channels`,
`num_classes` or `input_shape` that model_args does not give is filled from the dataset (the
convention: `Net(in_channels, num_classes)` works on every dataset). Each seed's model is built
under that seed (torch.manual_seed), so seed k of a population starts where run k alone starts.
A factory is called once per seed; an instance trains as given when one run uses it, and is
copied and re-initialised (every layer's reset_parameters) for each seed of several.

The run directory keeps what rebuilds it (`record`): the reference, class, constructor arguments,
the source file's path and sha256, and a copy of that file (model_source.py); `from_record` uses
the original file while its sha256 matches, else the copy, saying so in one line.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..errors import ConfigError, TinyVisionError
from ..yamlfile import clip
from .spec import KINDS

log = logging.getLogger(__name__)
CONVENTION = ("in_channels", "num_classes", "input_shape")  # constructor parameters filled from the dataset
SOURCE_COPY = "model_source.py"  # in the run directory
_MODULE_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_IMPORTED: dict[tuple[str, str], Any] = {}  # (file, sha256) -> module: a file is imported once per process


class ModelError(ConfigError):
    """A user model that cannot be used: missing file or class, a failing constructor, wrong output."""


@dataclass
class ModelSource:
    """One run's model: what `model` named (reference) and how to build it."""

    reference: str  # as config.yaml's `model` holds it
    kind: str  # spec | file | module | class | instance | factory
    args: dict[str, Any] = field(default_factory=dict)  # model_args
    cls: Optional[type] = None  # the nn.Module class (not for spec; a factory's once built)
    obj: Any = None  # the instance or factory (Python)
    file: Optional[Path] = None  # the file that defines cls, where there is one
    sha256: Optional[str] = None

    @property
    def is_spec(self) -> bool:
        return self.kind == "spec"

    @property
    def label(self) -> str:
        """How tables and messages name it."""
        return self.reference.removeprefix("python:")

    def build(self, input_shape: tuple[int, int, int], num_classes: int, overrides: Optional[dict] = None,
              *, copy_instance: bool = False) -> nn.Module:
        """A new model for (C, H, W) inputs and `num_classes` (draws its initial weights from torch's
        global generator: seed it first). overrides: spec fields (activation, kernel_size, ...)."""
        if self.is_spec:
            from .presets import create_model
            return create_model(self.reference, input_shape, num_classes, **(overrides or {}))
        if overrides:
            raise ModelError(f"model {self.label}: {', '.join(sorted(overrides))} change spec models only "
                             f"(presets and specs such as cnn:16/k3), not a model class; give model_args instead")
        if self.kind == "instance":
            return reinitialised(self.obj, self.label) if copy_instance else self.obj
        if self.kind == "factory":
            return self._checked_module(self._call(self.obj, {}), "its factory")
        args = {**convention_args(self.cls, input_shape, num_classes, self.args), **self.args}
        return self._checked_module(self._call(self.cls, args), self.cls.__name__)

    def _call(self, fn: Callable, args: dict[str, Any]) -> Any:
        try:
            return fn(**args)
        except TinyVisionError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code: say what it raised, in one line
            shown = ", ".join(f"{k}={clip(v, 30)}" for k, v in args.items())
            name = getattr(fn, "__name__", "the factory")
            raise ModelError(f"model {self.label}: {name}({shown}) raised {type(exc).__name__}: "
                             f"{_first_line(exc)}") from None

    def _checked_module(self, net: Any, made_by: str) -> nn.Module:
        if not isinstance(net, nn.Module):
            raise ModelError(f"model {self.label}: {made_by} returned a {type(net).__name__}, not an nn.Module")
        return net

    def check(self, input_shape: tuple[int, int, int], num_classes: int, overrides: Optional[dict] = None) -> None:
        """Build one model and pass two zero images through it in eval mode: a constructor that
        raises or an output that is not (batch, num_classes) logits is a one-line ModelError. The
        caller's random state and the model's modes are left as they were."""
        if self.is_spec:
            return
        if self.kind == "instance":  # as it is: checked in eval mode, its modes restored after
            check_output(self.obj, input_shape, num_classes, self.label)
            return
        with torch.random.fork_rng():
            net = self.build(input_shape, num_classes, overrides)
        check_output(net, input_shape, num_classes, self.label)

    def record(self) -> dict[str, Any]:
        """What rebuilds it later (result.json and model.safetensors keep it)."""
        record: dict[str, Any] = {"reference": self.reference, "kind": self.kind, "args": self.args}
        if self.cls is not None:
            record.update({"class": self.cls.__qualname__, "module": self.cls.__module__})
        if self.file is not None:
            record.update({"file": str(self.file), "sha256": self.sha256, "copy": SOURCE_COPY})
        return record

    def write_copy(self, run_dir: Path) -> None:
        """The source file, copied into the run directory (where there is one)."""
        from ..files import atomic_write

        if self.file is not None and self.file.is_file():
            atomic_write(run_dir / SOURCE_COPY, self.file.read_bytes())
        elif self.cls is not None and (text := class_source(self.cls)) is not None:
            atomic_write(run_dir / SOURCE_COPY, text)  # a notebook's class: its source, for reading


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0][:157] + "..." if len(lines[0]) > 160 else lines[0]) if lines else "(no message)"


def convention_args(cls: Any, input_shape: tuple[int, int, int], num_classes: int,
                    given: dict[str, Any]) -> dict[str, Any]:
    """The dataset's facts for the constructor parameters of the convention it names (CONVENTION)."""
    try:
        names = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    facts = {"in_channels": int(input_shape[0]), "num_classes": int(num_classes),
             "input_shape": tuple(int(d) for d in input_shape)}
    return {k: facts[k] for k in names if k in facts and k not in given}  # in the constructor's order


def check_output(net: nn.Module, input_shape: tuple[int, int, int], num_classes: int, label: str) -> None:
    """Two zero images through `net` (eval mode, no gradients): (2, num_classes) logits or a ModelError."""
    modes = {m: m.training for m in net.modules()}
    first = next(iter(net.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    try:
        net.eval()
        with torch.no_grad():
            out = net(torch.zeros(2, *input_shape, device=device))
    except Exception as exc:  # noqa: BLE001 - the user's forward
        shape = "x".join(map(str, input_shape))
        raise ModelError(f"model {label}: its forward on a batch of {shape} images raised "
                         f"{type(exc).__name__}: {_first_line(exc)}") from None
    finally:
        for module, training in modes.items():
            module.training = training
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"model {label}: its output for 2 images is {got}; expected (2, {num_classes}): "
                         f"one logit per class of the dataset")


def reinitialised(net: nn.Module, label: str) -> nn.Module:
    """A copy of `net` with fresh weights drawn from torch's generator (each layer's reset_parameters)."""
    fresh = copy.deepcopy(net)
    for name, module in fresh.named_modules():
        own = list(module.parameters(recurse=False))
        if own and not hasattr(module, "reset_parameters"):
            raise ModelError(f"model {label}: an instance trains several seeds only if every layer with "
                             f"weights has reset_parameters() ({name or 'the model'} has not); pass the class "
                             "or a factory (lambda: Net(...)) instead")
        if hasattr(module, "reset_parameters") and own:
            module.reset_parameters()
    return fresh


# -- resolving what `model` names -------------------------------------------------------------------

def is_class_reference(text: str) -> bool:
    """Whether `model` text names a user class (file.py:Class or package.module:Class), not a spec."""
    if text.split(":", 1)[0].strip() in KINDS:  # mlp:... and cnn:... are specs (their options hold ':' too)
        return False
    head, sep, tail = text.rpartition(":")
    return bool(sep) and bool(tail) and (head.endswith(".py") or "/" in head or os.sep in head
                                         or bool(_MODULE_PATH.match(head)))


def resolve_model(model: Any, model_args: Optional[dict[str, Any]] = None) -> ModelSource:
    """What `model` names (a string as config.yaml holds it, or in Python a class, an instance or a
    factory) as a ModelSource; a missing file or class, or a class that is no nn.Module, is one
    line (ModelError)."""
    args = dict(model_args or {})
    if isinstance(model, str):
        if model.startswith("python:"):
            raise ModelError(f"model {clip(model, 80)} was given in Python as an object; pass it again in Python "
                             "(model=...): a command cannot import it")
        if not is_class_reference(model):
            if args:
                raise ModelError(f"model_args give constructor arguments to a model class (file.py:Class); "
                                 f"{clip(model, 60)} is a preset or spec")
            return ModelSource(model, "spec")
        return _class_reference(model, args)
    return model_from(model, args)


def model_from(obj: Any, args: Optional[dict[str, Any]] = None) -> ModelSource:
    """A Python object as a model source: an nn.Module subclass, an instance, or a factory."""
    args = dict(args or {})
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        file = class_file(obj)
        if file is not None:  # importable again from its file: a reference any process can use
            return _class_reference(f"{file}:{obj.__qualname__}", args, cls=obj)
        return ModelSource(f"python:{obj.__qualname__}", "class", args, cls=obj)
    if args:
        raise ModelError("model_args go to a model class; an instance or a factory takes none")
    if isinstance(obj, nn.Module):
        cls = type(obj)
        return ModelSource(f"python:{cls.__qualname__}", "instance", {}, cls=cls, obj=obj, file=class_file(cls),
                           sha256=_sha(class_file(cls)))
    if callable(obj):
        name = getattr(obj, "__qualname__", type(obj).__name__)
        return ModelSource(f"python:{name}", "factory", {}, obj=obj)
    raise ModelError(f"model must be a name, a spec, file.py:Class, or in Python an nn.Module class, instance or "
                     f"factory; got {type(obj).__name__}")


def class_file(cls: type) -> Optional[Path]:
    """The .py file defining `cls` where importing it again gives the class (not __main__ or a notebook)."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if cls.__module__ == "__main__" or not path or not str(path).endswith(".py") or "<" in cls.__qualname__:
        return None
    return Path(path).resolve()


def class_source(cls: type) -> Optional[str]:
    """The class's source text where Python can get it (a notebook cell's included), else None."""
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return None


def _class_reference(text: str, args: dict[str, Any], cls: Optional[type] = None) -> ModelSource:
    head, _, name = text.rpartition(":")
    if head.endswith(".py") or "/" in head or os.sep in head:
        path = Path(head).expanduser()
        if not path.is_file():
            raise ModelError(f"model {clip(text, 80)}: no such file {clip(head, 80)}")
        found = cls or _class_in(import_file(path, text), name, text, path.name)
        return ModelSource(text, "file", args, cls=found, file=path.resolve(), sha256=_sha(path))
    module = _import_module(head, text)
    found = cls or _class_in(module, name, text, head)
    file = Path(module.__file__).resolve() if getattr(module, "__file__", None) else None
    return ModelSource(text, "module", args, cls=found, file=file, sha256=_sha(file))


def _sha(path: Optional[Path]) -> Optional[str]:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None and path.is_file() else None


def import_file(path: Path, what: str) -> Any:
    """Import a .py file under a private module name (its code runs), once per content."""
    digest = _sha(path) or ""
    key = (str(path.resolve()), digest)
    if key in _IMPORTED:
        return _IMPORTED[key]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"tinyvision_user_{stem}_{digest[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"model {clip(what, 80)}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes pickle by reference, dataclasses find their module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file
        sys.modules.pop(name, None)
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
        raise ModelError(f"model {clip(what, 80)}: importing {path.name} raised {type(exc).__name__}{where}: "
                         f"{_first_line(exc)}") from None
    _IMPORTED[key] = module
    return module


def _import_module(name: str, what: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` would: the user's package beside them
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ModelError(f"model {clip(what, 80)}: no module named {exc.name!r}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module
        raise ModelError(f"model {clip(what, 80)}: importing {name} raised {type(exc).__name__}: "
                         f"{_first_line(exc)}") from None


def _class_in(module: Any, name: str, what: str, where: str) -> type:
    found = getattr(module, name, None)
    if found is None:
        classes = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module)
                         and v.__module__ == module.__name__)
        listed = f" (its nn.Module classes: {', '.join(classes)})" if classes else " (it defines no nn.Module class)"
        raise ModelError(f"model {clip(what, 80)}: {where} has no {clip(name, 40)}{listed}")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        kind = "a class" if isinstance(found, type) else type(found).__name__
        raise ModelError(f"model {clip(what, 80)}: {name} in {where} is {kind}, not an nn.Module subclass")
    return found


# -- building a finished run's model again ----------------------------------------------------------

def from_record(record: dict[str, Any], run_dir: str | Path, given: Any = None) -> ModelSource:
    """The model source a run recorded (`record`), to build its model again: a spec as it is; a
    file or module while its sha256 matches, else the copy in the run directory (one line says
    so); a model given in Python (a notebook's class, an instance, a factory) only as `given`."""
    if given is not None:
        return model_from(given, record.get("args") if isinstance(given, type) else None)
    kind, label = record.get("kind", "spec"), str(record.get("reference", "?")).removeprefix("python:")
    if kind == "spec":
        return ModelSource(record["reference"], "spec")
    if record.get("file") and kind in ("file", "module", "class"):
        cls = _recorded_class(record, Path(run_dir))
        path = Path(record["file"])
        return ModelSource(record["reference"], kind, dict(record.get("args") or {}), cls=cls, file=path,
                           sha256=record.get("sha256"))
    how = {"class": "a class defined in a notebook or script", "instance": "an nn.Module instance",
           "factory": "a factory"}.get(kind, kind)
    raise ModelError(f"{run_dir}: its model {label} was given in Python as {how}, which a command cannot "
                     f"build again; in Python: tinyvision.load_model({str(run_dir)!r}, model={label.split('.')[-1]})")


def _recorded_class(record: dict[str, Any], run_dir: Path) -> type:
    """The recorded class from its file while unchanged, else from the run's copy of it."""
    path, copy_path = Path(record["file"]), run_dir / record.get("copy", SOURCE_COPY)
    what = str(record.get("reference", path))
    if path.is_file() and _sha(path) == record.get("sha256"):
        module = import_file(path, what)
    elif copy_path.is_file():
        why = "changed" if path.is_file() else "is gone"
        log.warning(f"{path} {why} since the run {run_dir}; using the copy recorded in {copy_path}")
        module = import_file(copy_path, what)
    else:
        raise ModelError(f"{run_dir}: its model file {path} is missing or changed and the run holds no copy "
                         f"({SOURCE_COPY})")
    return _class_in(module, str(record.get("class", "")).split(".")[-1], what, path.name)
