"""A model of your own, as a course assignment writes it: any nn.Module trains in tinyvision.

    tinyvision train --model examples/own-model/net.py:Net --dataset digits
    tinyvision train --model examples/own-model/net.py:Net --dataset mnist model_args='{width: 64}'
    tinyvision compare examples/own-model/net.py:Net digits-cnn --dataset digits

`in_channels` and `num_classes` are filled from the dataset (the constructor names them), `width`
from model_args. The forward takes normalised images (N, C, H, W) and returns (N, num_classes)
logits; global average pooling makes it work on 8x8 Digits and 32x32 colour images alike.
"""
from torch import nn


class Net(nn.Module):
    """Two conv - batch norm - ReLU blocks, a max pool, two more, global average pool, dropout, linear."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.2) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.features = nn.Sequential(*block(in_channels, width), *block(width, width), nn.MaxPool2d(2),
                                      *block(width, 2 * width), *block(2 * width, 2 * width),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))
