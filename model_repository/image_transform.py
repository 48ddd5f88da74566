"""The image preprocessing of `ImagePreprocessing`, shared by training (evaluation, export checks) and serving.

One function, so an image is turned into exactly the same tensor where the model is checked and where it
is served.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from model_repository.schema import ImagePreprocessing

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def _resized_size(size: tuple[int, int], spec: ImagePreprocessing) -> tuple[int, int]:
    """The shorter side becomes `spec.resize`, the longer one keeps the aspect ratio, truncated (as
    torchvision's `Resize(int)` does), and never shorter than the crop."""
    width, height = size
    if width <= height:
        return spec.resize, max(spec.height, int(spec.resize * height / width))
    return max(spec.width, int(spec.resize * width / height)), spec.resize


def image_to_array(image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    """A decoded image as the model's float32 CHW array: convert, resize, center-crop, normalise.

    With `spec.resize` set this is torchvision's `Resize(resize)`, `CenterCrop((height, width))` and
    `Normalize(mean, std)` on a Pillow image, to the pixel: the pipeline most published weights expect.
    """
    image = image.convert(spec.color_mode)
    resample = _RESAMPLING[spec.interpolation]
    if spec.resize is None:
        if image.size != (spec.width, spec.height):
            image = image.resize((spec.width, spec.height), resample)
    else:
        image = image.resize(_resized_size(image.size, spec), resample)
        left = round((image.width - spec.width) / 2)
        top = round((image.height - spec.height) / 2)
        image = image.crop((left, top, left + spec.width, top + spec.height))
    pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))
