"""Uploaded image bytes to the model's input array, with clear errors for what cannot be decoded."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import InvalidInput, PayloadTooLarge
from model_repository.image_transform import image_to_array
from model_repository.schema import ImagePreprocessing


def decode_image(data: bytes, spec: ImagePreprocessing, max_pixels: int) -> np.ndarray:
    """Decode, apply EXIF orientation and preprocess one image; raise `InvalidInput` if it is not one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > max_pixels:
                    raise PayloadTooLarge(
                        f"image is {image.width}x{image.height} pixels; the limit is {max_pixels} pixels"
                    )
                return image_to_array(ImageOps.exif_transpose(image), spec)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidInput("the upload is not an image Pillow can read (JPEG, PNG, GIF, BMP, TIFF, WebP...)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"the image could not be decoded: {exc}") from None
