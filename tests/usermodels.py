"""Users' own modules for the tests: what a course-work `class Net(nn.Module)` looks like."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BNNet(nn.Module):
    """conv - batch norm - ReLU - pool, twice, then a linear head (no dropout: deterministic)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))  # global average pool: any image size


class DropNet(nn.Module):
    """An MLP with batch norm and dropout."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        c, h, w = input_shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Dropout(0.3), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LogSoftmaxNet(nn.Module):
    """Ends in log_softmax, as the nll loss expects."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels * 64, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc2(F.relu(self.fc1(x.flatten(1)))), dim=1)


class ItemNet(nn.Module):
    """A forward that reads a number out of a tensor: fine alone, not something vmap can map."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels * 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        return out / max(1.0, float(out.detach().abs().max()))  # a host read of the output


class NoArgs(nn.Module):
    """A constructor that asks for nothing: Digits' shape written in."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))
