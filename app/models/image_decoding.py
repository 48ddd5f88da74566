"""Uploaded image bytes to the model's input array, with clear errors for what cannot be decoded."""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import InvalidInput, PayloadTooLarge
from model_repository.image_transform import image_to_array
from model_repository.schema import ImagePreprocessing

logger = logging.getLogger(__name__)


def decode_image(data: bytes, spec: ImagePreprocessing, max_pixels: int) -> np.ndarray:
    """Decode, apply EXIF orientation and preprocess one image; raise `InvalidInput` if it is not one, and
    `PayloadTooLarge` if it, or what resizing would make of it, has more than `max_pixels` pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                _check_size(image.width, image.height, spec, max_pixels)
                upright = ImageOps.exif_transpose(image)
                if upright.mode == "LAB":  # Pillow converts LAB (TIFF, JPEG) to RGB, but not straight to L
                    upright = upright.convert("RGB")
                return image_to_array(upright, spec)
    except (InvalidInput, PayloadTooLarge):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidInput("the upload is not an image Pillow can read (JPEG, PNG, GIF, BMP, TIFF, WebP...)") from None
    except MemoryError:
        raise PayloadTooLarge("image is too large to decode") from None
    except Exception as exc:
        # OSError, SyntaxError and ValueError mostly, but a plugin reading a damaged header may raise anything
        # (NotImplementedError for corrupt DDS and BLP files, found by tests/fuzz): all mean a broken file,
        # and none may fail the other requests batched with this one.
        logger.debug("image decoding failed", exc_info=True)
        raise InvalidInput(f"the image could not be decoded: {_describe(exc)}") from None


def _check_size(width: int, height: int, spec: ImagePreprocessing, max_pixels: int) -> None:
    """Refuse an image over the pixel limit before decoding it, and one so thin that resizing its shorter
    side to `spec.resize` would make an image over the limit (a 1 x 250,000 strip resized to 224 wide)."""
    if width * height > max_pixels:
        raise PayloadTooLarge(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
    if spec.resize is not None and width and height:
        short, long = sorted((width, height))
        resized = spec.resize * max(spec.resize * long // short, spec.height, spec.width)
        if resized > max_pixels:
            raise PayloadTooLarge(f"image is {width}x{height} pixels: resizing its shorter side to "
                                  f"{spec.resize} would make {resized} pixels; the limit is {max_pixels}")


def _describe(exc: Exception) -> str:
    """A short reason without host paths or code locations."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return text or type(exc).__name__
