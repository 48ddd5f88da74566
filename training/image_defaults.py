"""Per-architecture defaults of image training (no torch import: the command line reads them)."""

from __future__ import annotations

ARCHITECTURES = ("cnn", "resnet", "efficientnet-lite0")
PHOTO_ARCHITECTURES = ("resnet", "efficientnet-lite0")  # 224x224 RGB, random crop + flip
ARCH_DEFAULTS = {
    "cnn": {"epochs": 10, "batch_size": 128, "learning_rate": 3e-3},
    "resnet": {"epochs": 30, "batch_size": 64, "learning_rate": 1e-3},
    "efficientnet-lite0": {"epochs": 10, "batch_size": 32, "learning_rate": 5e-4},
}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# The EfficientNet-Lite weights come from TensorFlow Lite models that take (pixel - 127) / 128.
LITE_MEAN = [127 / 255] * 3
LITE_STD = [128 / 255] * 3
