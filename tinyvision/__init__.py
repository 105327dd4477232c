"""tinyvision: trustworthy MLP/CNN baselines on small images, fast.

    import tinyvision as tv
    result = tv.train({"dataset": "digits", "model": "digits-cnn", "epochs": 20})
"""
__version__ = "0.1.0"

from .config import RunConfig, load_config, make_config  # noqa: E402
from .data import ImageDataset, list_datasets, load_dataset  # noqa: E402
from .errors import ConfigError, DataError, SpecError, TinyVisionError, UnknownNameError  # noqa: E402
from .experiments import compare  # noqa: E402
from .inference import evaluate_run, load_model, predict_files  # noqa: E402
from .models import create_model, list_models, summarize  # noqa: E402
from .pipeline import train  # noqa: E402

__all__ = [
    "ConfigError", "DataError", "ImageDataset", "RunConfig", "SpecError", "TinyVisionError",
    "UnknownNameError", "compare", "create_model", "evaluate_run", "list_datasets", "list_models",
    "load_config", "load_dataset", "load_model", "make_config", "predict_files", "summarize", "train",
]
