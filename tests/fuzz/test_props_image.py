"""Property tests of image decoding: any bytes become the model's input array, or a clean 400/413 error."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.errors import InvalidInput, PayloadTooLarge
from app.models.image_decoding import decode_image
from model_repository.schema import ImagePreprocessing

from .images import WRITABLE, encode, png_bomb, png_text_bomb, synthetic, with_size

# Pillow warns about the damage it meets in broken files, and that the IM format is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

MAX_PIXELS = 250_000
SPECS = {
    "gray-28": ImagePreprocessing(color_mode="L", height=28, width=28, mean=[0.1307], std=[0.3081]),
    "rgb-resize-crop": ImagePreprocessing(
        color_mode="RGB",
        height=24,
        width=24,
        resize=32,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    ),
}
spec_names = st.sampled_from(sorted(SPECS))


def check_decoded(data: bytes, spec: ImagePreprocessing, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """The property: the configured CHW float32 shape with finite values, or InvalidInput/PayloadTooLarge."""
    try:
        array = decode_image(data, spec, max_pixels)
    except (InvalidInput, PayloadTooLarge) as exc:
        assert exc.message and "Traceback" not in exc.message
        return None
    assert array.dtype == np.float32
    assert array.shape == (spec.channels, spec.height, spec.width)
    assert np.isfinite(array).all()
    return array


@st.composite
def valid_images(draw: st.DrawFn) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(sorted(WRITABLE)))
    mode = draw(st.sampled_from(WRITABLE[fmt]))
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    if fmt in ("ICO", "DDS", "BLP", "JPEG2000"):  # formats with size rules: keep to a square of 16 or 32
        width = height = draw(st.sampled_from([16, 32]))
    return fmt, encode(synthetic(mode, width, height, draw(st.integers(0, 9))), fmt)


@st.composite
def broken_images(draw: st.DrawFn) -> bytes:
    """A valid image, then truncated, bytes flipped, a run zeroed or garbage spliced in."""
    _, data = draw(valid_images())
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        operation = draw(st.sampled_from(["truncate", "flip", "zero", "splice", "set"]))
        if operation == "truncate":
            del data[at:]
        elif operation == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "zero":
            data[at : at + draw(st.integers(1, 64))] = bytes(min(64, len(data) - at))
        elif operation == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
    return bytes(data)


@given(st.binary(max_size=2048), spec_names)
@example(b"", "gray-28")
@example(b"\x89PNG\r\n\x1a\n", "gray-28")
@example(b"GIF89a", "gray-28")
@example(b"\xff\xd8\xff", "gray-28")
@example(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "gray-28")
def test_any_bytes(data: bytes, spec: str) -> None:
    check_decoded(data, SPECS[spec])


@pytest.mark.parametrize(("fmt", "mode"), [(fmt, mode) for fmt, modes in WRITABLE.items() for mode in modes])
def test_each_writable_format_and_mode_decodes(fmt: str, mode: str) -> None:
    data = encode(synthetic(mode, 32, 32), fmt)
    for spec in SPECS.values():
        assert check_decoded(data, spec) is not None, f"a valid {mode} {fmt} image was refused"


@given(valid_images(), spec_names)
def test_writable_formats_decode_at_any_size(image: tuple[str, bytes], spec: str) -> None:
    fmt, data = image
    assert check_decoded(data, SPECS[spec]) is not None, f"a valid {fmt} image was refused"


@given(broken_images(), spec_names)
def test_broken_images(data: bytes, spec: str) -> None:
    check_decoded(data, SPECS[spec])


@given(
    st.sampled_from(["PNG", "GIF", "BMP", "JPEG", "WEBP", "TIFF", "PPM"]),
    st.integers(1, 20_000),
    st.integers(1, 20_000),
    spec_names,
)
def test_header_sizes_are_checked_before_decoding(fmt: str, width: int, height: int, spec: str) -> None:
    """A file whose header claims any size is refused (413) past the pixel limit, and never decoded slowly."""
    data = with_size(
        encode(synthetic("RGB" if fmt in ("JPEG", "WEBP") else "L", 16, 16), fmt), fmt, width, height
    )
    started = time.perf_counter()
    check_decoded(data, SPECS[spec])
    assert time.perf_counter() - started < 2.0


BOMBS = {"png-30000x30000": png_bomb(), "png-ztxt-64MB": png_text_bomb()}


@pytest.mark.parametrize("spec", sorted(SPECS))
@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_bombs_are_refused_quickly(bomb: str, spec: str) -> None:
    started = time.perf_counter()
    check_decoded(BOMBS[bomb], SPECS[spec])
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("size", [(1, MAX_PIXELS), (MAX_PIXELS, 1), (2, MAX_PIXELS // 2)])
def test_extreme_aspect_ratios_stay_cheap(size: tuple[int, int]) -> None:
    """A thin image within the pixel limit must not blow up when its shorter side is resized up."""
    data = encode(synthetic("L", *size), "PNG")
    for spec in SPECS.values():
        started = time.perf_counter()
        check_decoded(data, spec)
        assert time.perf_counter() - started < 2.0, spec
