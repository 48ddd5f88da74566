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


def image_to_array(image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    """A decoded image as the model's float32 CHW array: convert, resize, center-crop, normalise."""
    image = image.convert(spec.color_mode)
    resample = _RESAMPLING[spec.interpolation]
    if spec.resize is None:
        if image.size != (spec.width, spec.height):
            image = image.resize((spec.width, spec.height), resample)
    else:
        width, height = image.size
        scale = spec.resize / min(width, height)
        resized = (max(spec.width, round(width * scale)), max(spec.height, round(height * scale)))
        if resized != image.size:
            image = image.resize(resized, resample)
        left = (resized[0] - spec.width) // 2
        top = (resized[1] - spec.height) // 2
        image = image.crop((left, top, left + spec.width, top + spec.height))
    pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))
