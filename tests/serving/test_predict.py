"""POST /predict answers what the ONNX model itself says, for every way of sending an image or a text."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from .conftest import MAX_ITEMS
from .support import ModelUnderTest, assert_prediction, b64

DEFAULT_TOP_K = 5


def test_image_multipart_upload(http: httpx.Client, image_model: ModelUnderTest, digits: list[bytes]) -> None:
    for digit in digits[:5]:
        response = http.post("/predict", files={"file": ("digit.png", digit, "image/png")})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == image_model.name and body["version"] == image_model.config.version
        assert_prediction(body, image_model.image_probabilities(digit), image_model.labels, DEFAULT_TOP_K)


def test_image_multipart_several_files_keep_order(http: httpx.Client, image_model: ModelUnderTest,
                                                  digits: list[bytes]) -> None:
    chosen = digits[10:16]
    files = [("file", (f"digit-{index}.png", digit, "image/png")) for index, digit in enumerate(chosen)]
    response = http.post("/predict", files=files, data={"top_k": "3", "model": image_model.name})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(chosen)
    for prediction, digit in zip(predictions, chosen, strict=True):
        assert_prediction(prediction, image_model.image_probabilities(digit), image_model.labels, 3)


def test_image_raw_png_body(http: httpx.Client, image_model: ModelUnderTest, digits: list[bytes]) -> None:
    for digit in digits[20:25]:
        response = http.post("/predict", content=digit, headers={"Content-Type": "image/png"},
                             params={"model": image_model.name, "top_k": 10})
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), image_model.image_probabilities(digit), image_model.labels, 10)


def test_image_base64_json(http: httpx.Client, image_model: ModelUnderTest, digits: list[bytes]) -> None:
    digit = digits[30]
    response = http.post("/predict", json={"image": b64(digit), "top_k": 1})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), image_model.image_probabilities(digit), image_model.labels, 1)

    data_url = "data:image/png;base64," + b64(digits[31])
    response = http.post("/predict", json={"image": data_url, "model": image_model.name})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), image_model.image_probabilities(digits[31]), image_model.labels,
                      DEFAULT_TOP_K)


def test_image_base64_json_list(http: httpx.Client, image_model: ModelUnderTest, digits: list[bytes]) -> None:
    chosen = digits[40:52]
    response = http.post("/predict", json={"image": [b64(digit) for digit in chosen]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == image_model.name
    assert len(body["predictions"]) == len(chosen)
    for prediction, digit in zip(body["predictions"], chosen, strict=True):
        assert_prediction(prediction, image_model.image_probabilities(digit), image_model.labels, DEFAULT_TOP_K)


def test_single_text(http: httpx.Client, text_model: ModelUnderTest, reviews: list[str]) -> None:
    for review in reviews[:6]:
        response = http.post("/predict", json={"text": review})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == text_model.name and body["version"] == text_model.config.version
        assert "predictions" not in body
        assert_prediction(body, text_model.text_probabilities(review), text_model.labels, DEFAULT_TOP_K)


def test_list_of_texts_keeps_order(http: httpx.Client, text_model: ModelUnderTest, reviews: list[str]) -> None:
    # Texts of very different lengths share one padded batch: each must still get its own answer.
    response = http.post("/predict", json={"text": reviews, "model": text_model.name, "top_k": 1})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(reviews)
    for prediction, review in zip(predictions, reviews, strict=True):
        assert_prediction(prediction, text_model.text_probabilities(review), text_model.labels, 1)


def test_text_case_and_truncation(http: httpx.Client, text_model: ModelUnderTest, reviews: list[str]) -> None:
    """Upper-case text and a text longer than max_length get the model's answer for the preprocessed input."""
    long_review = " ".join(reviews) * 3
    texts = [reviews[0].upper(), long_review]
    response = http.post("/predict", json={"text": texts}, params={"top_k": 2})
    assert response.status_code == 200, response.text
    for prediction, text in zip(response.json()["predictions"], texts, strict=True):
        assert_prediction(prediction, text_model.text_probabilities(text), text_model.labels, 2)


@pytest.mark.parametrize("top_k", [1, 2, 1000])
def test_top_k_is_capped_by_the_labels(http: httpx.Client, image_model: ModelUnderTest, digits: list[bytes],
                                       top_k: int) -> None:
    response = http.post("/predict", json={"image": b64(digits[60]), "top_k": top_k})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), image_model.image_probabilities(digits[60]), image_model.labels, top_k)


def _rotated_color_jpeg(png: bytes) -> bytes:
    """A digit as a larger RGB JPEG stored on its side, with the EXIF orientation that puts it upright."""
    with Image.open(io.BytesIO(png)) as digit:
        big = digit.convert("RGB").resize((112, 112), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    big.transpose(Image.Transpose.ROTATE_90).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_image_resized_converted_and_exif_oriented(http: httpx.Client, image_model: ModelUnderTest,
                                                   digits: list[bytes]) -> None:
    """A large colour JPEG on its side gets the answer for the upright, converted, resized image."""
    for digit in digits[70:74]:
        photo = _rotated_color_jpeg(digit)
        expected = image_model.image_probabilities(photo)
        assert not np.allclose(expected, image_model.image_probabilities(photo, exif_orientation=False), atol=1e-4)
        response = http.post("/predict", files={"file": ("photo.jpg", photo, "image/jpeg")}, params={"top_k": 10})
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), expected, image_model.labels, 10)


def test_many_texts_in_one_request(http: httpx.Client, text_model: ModelUnderTest, reviews: list[str]) -> None:
    """As many distinct texts as one request may hold (several batches when max_batch_size is smaller)
    keep their order."""
    texts = [f"{first} {second}" for first in reviews for second in reviews if first != second][-MAX_ITEMS:]
    response = http.post("/predict", json={"text": texts, "top_k": 1})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(texts)
    for prediction, text in zip(predictions, texts, strict=True):
        assert_prediction(prediction, text_model.text_probabilities(text), text_model.labels, 1)
