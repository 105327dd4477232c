"""tinyvision: trustworthy MLP/CNN baselines on small images, fast.

    import tinyvision as tv
    result = tv.train({"dataset": "digits", "model": "digits-cnn", "epochs": 20})
    result["test"]["accuracy"], result.plot_curves()   # a dict that also shows itself in Jupyter
    tv.load("runs/...")                                  # any run or experiment directory

Importing the package is light: the public names below load their module (and torch) on first use,
so `tinyvision --help` and `tinyvision datasets` do not pay for the training stack.
"""
from __future__ import annotations

from importlib import import_module, metadata
from typing import Any

from .errors import ConfigError, DataError, SpecError, TinyVisionError, UnknownNameError

try:
    __version__ = metadata.version("tinyvision")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {  # public name -> the module that defines it
    "RunConfig": "config", "load_config": "config", "make_config": "config",
    "ImageDataset": "data", "list_datasets": "data", "load_dataset": "data",
    "evaluate_run": "inference", "load_model": "inference", "predict_files": "inference",
    "create_model": "models", "list_models": "models", "summarize": "models",
    # pipeline.train and experiments.compare, returning results that show themselves in a notebook
    "ExperimentResult": "notebook", "RunResult": "notebook", "compare": "notebook", "load": "notebook",
    "run": "notebook", "train": "notebook",
    "lr_find": "notebook",  # the learning-rate range test; its curve shows itself in a notebook
    "show": "dataview", "DatasetView": "dataview",
    "cross_validate": "experiments.runner",  # k-fold cross-validation (--folds K)  # a look at a dataset: counts, value ranges, a grid
    "TinyVisionClassifier": "sklearn_api",  # scikit-learn's fit/predict over tinyvision's training
}

__all__ = sorted(["ConfigError", "DataError", "SpecError", "TinyVisionError", "UnknownNameError", *_LAZY])


def __getattr__(name: str) -> Any:
    """PEP 562: a public name imports its module on first use; a submodule name imports it."""
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    try:
        return import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":  # a submodule that failed to import: say why
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
