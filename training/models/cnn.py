"""A compact CNN for small images (28x28 digits, 32x32 objects)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Two conv-conv-maxpool stages, a last conv stage, global average pooling, dropout and a linear head.

    Works for any input of at least 4x4 pixels (the pooling is adaptive).
    """

    def __init__(
        self, in_channels: int, num_labels: int, widths: Sequence[int] = (32, 64, 128), dropout: float = 0.25
    ) -> None:
        super().__init__()
        first, second, third = widths
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, first),
            *_conv_bn_relu(first, first),
            nn.MaxPool2d(2),
            *_conv_bn_relu(first, second),
            *_conv_bn_relu(second, second),
            nn.MaxPool2d(2),
            *_conv_bn_relu(second, third),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(third, num_labels))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))
