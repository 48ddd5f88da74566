"""Training-time image augmentation on Pillow images, applied before the serving preprocessing."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
from PIL import Image

from model_repository import ImagePreprocessing
from model_repository.image_transform import image_to_array

ImageTransform = Callable[[Image.Image], np.ndarray]


def random_affine(
    image: Image.Image,
    max_degrees: float = 10.0,
    max_shift: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
) -> Image.Image:
    """Small random rotation, shift and zoom around the centre; uncovered pixels are filled with 0 (black)."""
    angle = math.radians(random.uniform(-max_degrees, max_degrees))
    zoom = random.uniform(*scale)
    width, height = image.size
    shift_x = random.uniform(-max_shift, max_shift) * width
    shift_y = random.uniform(-max_shift, max_shift) * height
    centre_x, centre_y = width / 2, height / 2
    # Pillow maps each output pixel back to an input pixel: invert rotation+zoom about the centre, then shift.
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    matrix = (
        cos,
        sin,
        centre_x - cos * (centre_x + shift_x) - sin * (centre_y + shift_y),
        -sin,
        cos,
        centre_y + sin * (centre_x + shift_x) - cos * (centre_y + shift_y),
    )
    return image.transform(image.size, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR, fillcolor=0)


def random_resized_crop_flip(
    image: Image.Image, size: tuple[int, int], scale: tuple[float, float] = (0.25, 1.0)
) -> Image.Image:
    """A random area (aspect 3/4 to 4/3) resized to `size` (width, height), flipped half the time."""
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * random.uniform(*scale)
        ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
        crop_w = round(math.sqrt(target * ratio))
        crop_h = round(math.sqrt(target / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left = random.randint(0, width - crop_w)
            top = random.randint(0, height - crop_h)
            break
    else:
        crop_w, crop_h = min(width, height), min(width, height)
        left, top = (width - crop_w) // 2, (height - crop_h) // 2
    image = image.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    if random.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def eval_transform(spec: ImagePreprocessing) -> ImageTransform:
    """Exactly the server's preprocessing."""
    return lambda image: image_to_array(image, spec)


def train_transform(spec: ImagePreprocessing, augment: str) -> ImageTransform:
    """`none`: serving preprocessing only; `affine`: random_affine first (digits, small objects);
    `crop-flip`: a random resized crop and flip replace the resize/center-crop (photos)."""
    if augment == "none":
        return eval_transform(spec)
    if augment == "affine":
        return lambda image: image_to_array(random_affine(image.convert(spec.color_mode)), spec)
    if augment == "crop-flip":
        straight = spec.model_copy(update={"resize": None})
        size = (spec.width, spec.height)
        return lambda image: image_to_array(
            random_resized_crop_flip(image.convert(spec.color_mode), size), straight
        )
    raise ValueError(f"unknown augmentation {augment!r}")
