"""A hand-made corpus of awkward image files through the real server: each gets a correct 200 (the same
answer as the model run directly on that file) or a clear 4xx JSON error, and the server stays healthy."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.serving.conftest import MAX_IMAGE_PIXELS
from tests.serving.support import (
    Call,
    ModelUnderTest,
    ServerProcess,
    assert_json_error,
    assert_prediction,
    b64,
    send_concurrently,
)

from .conftest import assert_healthy
from .images import (
    UNUSUAL_IMAGES,
    WRITABLE,
    png_bomb,
    png_text_bomb,
    valid_image,
    with_size,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _flip_middle(data: bytes) -> bytes:
    middle = bytearray(data)
    for at in range(len(data) // 3, 2 * len(data) // 3, 7):
        middle[at] ^= 0x5A
    return bytes(middle)


# Files that are not images, or damaged ones: refused with 400, or, where Pillow can still decode the damage
# (libwebp and some JPEG damage), answered exactly as the model answers that decoded image.
BROKEN = {
    "zero-bytes": b"",
    "png-signature-only": b"\x89PNG\r\n\x1a\n",
    "jpeg-soi-only": b"\xff\xd8\xff",
    "gif-header-only": b"GIF89a",
    "webp-riff-only": b"RIFF\x10\x00\x00\x00WEBPVP8 ",
    "text-file": b"hello, this is not an image\n",
    "json-file": b'{"image": "no"}',
    "dds-unknown-pixel-format": b"DDS |\x00\x00\x00\x0f\x10\x00\x00\x10\x00\x00\x00\x10\x00\x00\x00@"
    + bytes(51)
    + b"\xc9"
    + bytes(60),
    **{
        f"truncated-{fmt.lower()}-{cut}": valid_image(fmt)[: int(len(valid_image(fmt)) * cut / 100)]
        for fmt in ("JPEG", "PNG", "GIF", "WEBP")
        for cut in (10, 50, 90)
    },
    **{f"corrupt-{fmt.lower()}": _flip_middle(valid_image(fmt)) for fmt in ("JPEG", "PNG", "GIF", "WEBP")},
}

# Decompression bombs: a header that claims 20000 x 20000 pixels, a real 30000 x 30000 PNG, and an image of
# every writable format just over the server's pixel limit. All must be refused with 413 before decoding.
BOMBS = {
    **{
        f"claims-20000x20000-{fmt.lower()}": with_size(
            valid_image(fmt, "RGB" if fmt in ("JPEG", "WEBP") else "L", (16, 16)), fmt, 20_000, 20_000
        )
        for fmt in ("PNG", "GIF", "BMP", "JPEG", "WEBP", "TIFF", "PPM")
    },
    "png-30000x30000": png_bomb(),
    **{
        f"over-limit-{fmt.lower()}": valid_image(fmt, WRITABLE[fmt][0], (520, 520))
        for fmt in WRITABLE
        if fmt not in ("ICO", "DDS", "BLP", "XBM", "MSP")
    },
}


def _send_raw(client: httpx.Client, data: bytes, mime: str = "image/png") -> httpx.Response:
    return client.post("/predict", content=data, headers={"Content-Type": mime})


@pytest.mark.parametrize("name", sorted(UNUSUAL_IMAGES))
def test_unusual_images_get_the_right_answer(
    name: str, fuzz_http: httpx.Client, image_model: ModelUnderTest
) -> None:
    """As a raw body, a multipart upload and base64 JSON: the answer of the model run on the decoded file."""
    data = UNUSUAL_IMAGES[name]
    expected = image_model.image_probabilities(data)
    answers = [
        (_send_raw(fuzz_http, data), 5),
        (fuzz_http.post("/predict", files={"file": (name, data)}, params={"top_k": 10}), 10),
        (fuzz_http.post("/predict", json={"image": b64(data), "top_k": 3}), 3),
    ]
    for response, top_k in answers:
        assert response.status_code == 200, (name, response.text)
        assert_prediction(response.json(), expected, image_model.labels, top_k)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_images_get_400_or_the_right_answer(
    name: str, fuzz_http: httpx.Client, image_model: ModelUnderTest
) -> None:
    data = BROKEN[name]
    try:
        expected = image_model.image_probabilities(data)
    except Exception:  # noqa: BLE001 - whatever Pillow raises, the service must answer 400
        expected = None
    for response in (_send_raw(fuzz_http, data), fuzz_http.post("/predict", files={"file": (name, data)})):
        if expected is None:
            assert_json_error(response, 400, "invalid_input")
        else:
            assert response.status_code == 200, response.text
            assert_prediction(response.json(), expected, image_model.labels, 5)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_decompression_bombs_get_413(name: str, fuzz_http: httpx.Client) -> None:
    data = BOMBS[name]
    try:
        with Image.open(io.BytesIO(data)) as image:
            assert image.width * image.height > MAX_IMAGE_PIXELS, (name, image.size)
    except Image.DecompressionBombError:
        pass  # over Pillow's own limit, far over the server's
    assert_json_error(_send_raw(fuzz_http, data), 413, "payload_too_large")


def test_text_chunk_bomb_is_harmless(fuzz_http: httpx.Client) -> None:
    """A small PNG with a zTXt chunk inflating to 64 MB: answered (Pillow caps text chunks) or refused."""
    response = _send_raw(fuzz_http, png_text_bomb())
    if response.status_code != 200:
        assert_json_error(response, response.status_code)
        assert response.status_code in (400, 413)


def test_one_broken_image_fails_alone(fuzz_server: ServerProcess, image_model: ModelUnderTest) -> None:
    """Corrupt uploads among good ones sent at the same time (so batched together): only they fail."""
    good = UNUSUAL_IMAGES["palette-png"]
    calls = [
        Call(
            {
                "content": BROKEN["dds-unknown-pixel-format"] if i % 4 == 0 else good,
                "headers": {"Content-Type": "image/png"},
            }
        )
        for i in range(32)
    ]
    answers = send_concurrently(fuzz_server.url, calls, concurrency=32)
    expected = image_model.image_probabilities(good)
    for index, response in enumerate(answers):
        if index % 4 == 0:
            assert_json_error(response, 400, "invalid_input")
        else:
            assert response.status_code == 200, response.text
            assert_prediction(response.json(), expected, image_model.labels, 5)
    assert_healthy(fuzz_server)
