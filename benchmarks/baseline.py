"""The per-sample pipeline that tinyvision is measured against (pytorch/examples mnist/main.py style).

With torchvision installed: its MNIST dataset with ToTensor + Normalize. Without it: a torch Dataset
doing the same per-sample work as torchvision's code (uint8 row -> PIL image -> ToTensor's float / 255
-> Normalize), or, without Pillow, the plain-torch part of it. Either way a
torch.utils.data.DataLoader with shuffle=True, num_workers=0 and a plain training loop.
"""
from __future__ import annotations

import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the constants pytorch/examples hard-codes


class PerSampleMNIST(Dataset):
    """One image at a time, as torchvision's ToTensor + Normalize would produce it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels.tolist()  # (N,1,28,28) uint8

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i].to(torch.float32).div(255.0)  # ToTensor
        return (x - MNIST_MEAN) / MNIST_STD, self.labels[i]  # Normalize


class TorchvisionLikeMNIST(Dataset):
    """torchvision.datasets.MNIST.__getitem__ + ToTensor + Normalize, line for line, without
    torchvision: each sample is decoded into a PIL image, converted back and normalised."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        from PIL import Image  # noqa: F401 (fail here when Pillow is missing)

        self.data, self.targets = images[:, 0], labels  # (N,28,28) uint8, as torchvision stores it

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        import numpy as np
        from PIL import Image

        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy(), mode="L")
        # transforms.ToTensor (functional.to_tensor for a PIL image)
        t = torch.from_numpy(np.array(img, np.uint8, copy=True))
        t = t.view(img.size[1], img.size[0], len(img.getbands())).permute((2, 0, 1)).contiguous()
        t = t.to(dtype=torch.get_default_dtype()).div(255)
        # transforms.Normalize (functional.normalize)
        mean = torch.as_tensor((MNIST_MEAN,), dtype=t.dtype, device=t.device)
        std = torch.as_tensor((MNIST_STD,), dtype=t.dtype, device=t.device)
        if (std == 0).any():
            raise ValueError("std evaluated to zero")
        t = t.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
        return t, target


def per_sample_dataset(images: torch.Tensor, labels: torch.Tensor, data_dir: Optional[str],
                       train: bool) -> tuple[Dataset, str]:
    """torchvision's MNIST when it is installed (and finds the files), else PerSampleMNIST."""
    try:
        from torchvision import datasets, transforms  # type: ignore[import-not-found]

        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
        ds = datasets.MNIST(f"{data_dir}/torchvision", train=train, download=False, transform=tf)
        return ds, "torchvision MNIST + ToTensor + Normalize"
    except Exception:  # not installed, or no torchvision-layout files: the same work without it
        pass
    try:
        kind = "torchvision's per-sample code without torchvision (PIL decode, ToTensor, Normalize)"
        return TorchvisionLikeMNIST(images, labels), kind
    except ImportError:
        return PerSampleMNIST(images, labels), "plain-torch Dataset (uint8 -> /255 -> normalise)"


def loader(dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0)


def optimizer_for(model: nn.Module, name: str, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """The optimiser with PyTorch's defaults (no foreach/fused flags), as a plain script would."""
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return torch.optim.Adam(model.parameters(), lr=lr)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches: DataLoader,
                max_steps: Optional[int] = None, warmup: int = 0,
                scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None) -> tuple[float, int]:
    """The examples' train(): returns (seconds, steps) of the timed steps (after `warmup` steps)."""
    model.train()
    steps, start = 0, time.perf_counter()
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            steps, start = 0, time.perf_counter()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        steps += 1
        if max_steps is not None and i + 1 >= warmup + max_steps:
            break
    return time.perf_counter() - start, steps


@torch.no_grad()
def accuracy(model: nn.Module, batches: DataLoader) -> tuple[float, float]:
    """The examples' test(): (accuracy, images per second)."""
    model.eval()
    correct = seen = 0
    start = time.perf_counter()
    for x, y in batches:
        correct += int((model(x).argmax(dim=1) == y).sum())
        seen += len(y)
    return correct / max(seen, 1), seen / (time.perf_counter() - start)
