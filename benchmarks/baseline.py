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


# --- torchvision 0.28's per-sample path, call for call (BSD-3-Clause, (c) Soumith Chintala 2016) ---
# torchvision's own wheel cannot be imported beside this project's CPU build of torch ("operator
# torchvision::nms does not exist"), so the Python it runs per sample is reproduced here: MNIST's
# __getitem__ (uint8 row -> PIL image), Compose, ToTensor (PIL -> numpy -> CHW float / 255) and the
# Normalize module (clone, then sub_/div_ by per-call mean/std tensors), with their checks and
# API-usage logging calls.

def _log_api_usage_once(obj: object) -> None:
    import types

    module = obj.__module__
    if not module.startswith("torchvision"):
        module = f"torchvision.internal.{module}"
    name = obj.__name__ if isinstance(obj, types.FunctionType) else obj.__class__.__name__
    torch._C._log_api_usage_once(f"{module}.{name}")


def _to_tensor(pic):  # torchvision.transforms.functional.to_tensor, PIL branch
    import numpy as np
    from PIL import Image

    if not torch.jit.is_scripting() and not torch.jit.is_tracing():
        _log_api_usage_once(_to_tensor)
    if not (isinstance(pic, Image.Image) or isinstance(pic, np.ndarray)):
        raise TypeError(f"pic should be PIL Image or ndarray. Got {type(pic)}")
    default_float_dtype = torch.get_default_dtype()
    mode_to_nptype = {"I": np.int32, "I;16": np.int16, "F": np.float32}
    img = torch.from_numpy(np.array(pic, mode_to_nptype.get(pic.mode, np.uint8), copy=True))
    if pic.mode == "1":
        img = 255 * img
    img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
    img = img.permute((2, 0, 1)).contiguous()
    if isinstance(img, torch.ByteTensor):
        return img.to(dtype=default_float_dtype).div(255)
    return img


def _normalize(tensor: torch.Tensor, mean: list, std: list, inplace: bool = False) -> torch.Tensor:
    if not torch.jit.is_scripting() and not torch.jit.is_tracing():
        _log_api_usage_once(_normalize)
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"img should be Tensor Image. Got {type(tensor)}")
    if not tensor.ndim >= 2:  # _functional_tensor.normalize from here on
        raise TypeError("Tensor is not a torch image.")
    if not tensor.is_floating_point():
        raise TypeError(f"Input tensor should be a float tensor. Got {tensor.dtype}.")
    if tensor.ndim < 3:
        raise ValueError(f"Expected tensor to be a tensor image of size (..., C, H, W). Got {tensor.size()}")
    if not inplace:
        tensor = tensor.clone()
    dtype = tensor.dtype
    mean_t = torch.as_tensor(mean, dtype=dtype, device=tensor.device)
    std_t = torch.as_tensor(std, dtype=dtype, device=tensor.device)
    if (std_t == 0).any():
        raise ValueError(f"std evaluated to zero after conversion to {dtype}, leading to division by zero.")
    if mean_t.ndim == 1:
        mean_t = mean_t.view(-1, 1, 1)
    if std_t.ndim == 1:
        std_t = std_t.view(-1, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)


class Compose:
    def __init__(self, transforms: list) -> None:
        _log_api_usage_once(self)
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class ToTensor:
    def __init__(self) -> None:
        _log_api_usage_once(self)

    def __call__(self, pic):
        return _to_tensor(pic)


class Normalize(nn.Module):
    def __init__(self, mean: tuple, std: tuple, inplace: bool = False) -> None:
        super().__init__()
        _log_api_usage_once(self)
        self.mean, self.std, self.inplace = mean, std, inplace

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return _normalize(tensor, self.mean, self.std, self.inplace)


class TorchvisionLikeMNIST(Dataset):
    """torchvision.datasets.MNIST(transform=Compose([ToTensor(), Normalize(...)])) without torchvision."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        from PIL import Image  # noqa: F401 (fail here when Pillow is missing)

        self.data, self.targets = images[:, 0], labels  # (N,28,28) uint8, as torchvision stores it
        self.transform = Compose([ToTensor(), Normalize((MNIST_MEAN,), (MNIST_STD,))])
        self.target_transform = None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy())  # torchvision's _Image_fromarray: mode "L" for uint8 2-D
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # a CUDA timer without it would time the kernel launches only
        torch.cuda.synchronize(device)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches: DataLoader,
                max_steps: Optional[int] = None, warmup: int = 0,
                scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
                device: torch.device = torch.device("cpu")) -> tuple[float, int]:
    """The examples' train(), each batch moved to `device` as there: returns (seconds, steps) of
    the timed steps (after `warmup` steps)."""
    model.train()
    _sync(device)
    steps, start = 0, time.perf_counter()
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            _sync(device)
            steps, start = 0, time.perf_counter()
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        steps += 1
        if max_steps is not None and i + 1 >= warmup + max_steps:
            break
    _sync(device)
    return time.perf_counter() - start, steps


@torch.no_grad()
def accuracy(model: nn.Module, batches: DataLoader,
             device: torch.device = torch.device("cpu")) -> tuple[float, float]:
    """The examples' test(): (accuracy, images per second)."""
    model.eval()
    correct = seen = 0
    _sync(device)
    start = time.perf_counter()
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        correct += int((model(x).argmax(dim=1) == y).sum())  # a host sync per batch, as there
        seen += len(y)
    return correct / max(seen, 1), seen / (time.perf_counter() - start)
