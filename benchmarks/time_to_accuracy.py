"""Child process of the time-to-accuracy benchmark: the parent times it from its own start.

    python -m benchmarks.time_to_accuracy tinyvision RECIPE DATA_DIR DEVICE
    python -m benchmarks.time_to_accuracy per-sample RECIPE DATA_DIR DEVICE MAX_EPOCHS TARGET

Prints one JSON line per test evaluation: {"epoch", "accuracy", "t"} with t = time.time(), so the
parent measures wall time from process start (imports, data loading and evaluation included).
"""
from __future__ import annotations

import json
import sys
import time


def report(**row: object) -> None:
    print(json.dumps({**row, "t": time.time()}), flush=True)


def run_tinyvision(recipe: str, data_dir: str, device: str) -> None:
    import tinyvision as tv

    result = tv.train({"recipe": recipe, "data_dir": data_dir, "device": device}, out=_tmp_out(), quiet=True)
    report(epoch=result["epochs_run"], accuracy=result["test"]["accuracy"],
           train_seconds=result["train_seconds"])


def run_per_sample(recipe: str, data_dir: str, device_name: str, max_epochs: int, target: float) -> None:
    """The recipe's model, optimiser, lr and batch size through the per-sample pipeline (no
    augmentation, one-cycle over max_epochs), tested after every epoch until `target`."""
    import torch

    from benchmarks import baseline
    from tinyvision import make_config
    from tinyvision.data import load_dataset
    from tinyvision.models import create_model

    cfg = make_config(recipe=recipe, data_dir=data_dir)
    device = torch.device(device_name)
    torch.manual_seed(cfg.seed)
    data = load_dataset("mnist", data_dir=data_dir)
    model = create_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_overrides()).to(device)
    train_ds, _ = baseline.per_sample_dataset(data.train.images, data.train.labels, data_dir, True)
    test_ds, _ = baseline.per_sample_dataset(data.test.images, data.test.labels, data_dir, False)
    batches = baseline.loader(train_ds, cfg.batch_size, shuffle=True)
    optimizer = baseline.optimizer_for(model, cfg.optimizer, cfg.lr, cfg.momentum)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr,
                                                    total_steps=max_epochs * len(batches))
    for epoch in range(1, max_epochs + 1):
        baseline.train_steps(model, optimizer, batches, scheduler=scheduler, device=device)
        acc, _ = baseline.accuracy(model, baseline.loader(test_ds, 1000, shuffle=False), device=device)
        report(epoch=epoch, accuracy=acc)
        if acc >= target:
            return


def _tmp_out() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="tinyvision-bench-")


if __name__ == "__main__":
    mode, recipe, data_dir, device = sys.argv[1:5]
    if mode == "tinyvision":
        run_tinyvision(recipe, data_dir, device)
    else:
        run_per_sample(recipe, data_dir, device, int(sys.argv[5]), float(sys.argv[6]))
