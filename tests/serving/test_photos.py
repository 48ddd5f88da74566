"""The bundled ImageNet photo model through a real server: real photos, uploaded as a user would, get
sensible labels, and the server's input tensor is the one the weights expect."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_repository.image_transform import image_to_array

from .support import ModelUnderTest, ServerProcess, assert_prediction

PHOTO_MODEL = "efficientnet-lite0-imagenet"
# Sample photo -> ImageNet classes that are a right first answer for it.
SENSIBLE_TOP1 = {
    "chelsea": {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"},
    "coffee": {"espresso", "cup", "coffee mug"},
    "rocket": {"missile", "projectile", "space shuttle"},
    "stereo_motorcycle": {"moped", "motor scooter", "crash helmet", "disk brake"},
    "china": {"palace", "monastery", "bell cote", "pagoda"},
    "flower": {"daisy"},
    "camera": {"tripod", "reflex camera"},
}


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    pytest.importorskip("skimage", reason="the sample photos ship with scikit-image (the train extra)")
    from training.data.sample_photos import sample_photos

    return sample_photos()


@pytest.fixture(scope="module")
def photo_model(models_dir: Path) -> ModelUnderTest:
    model = ModelUnderTest.load(models_dir, PHOTO_MODEL)
    assert model.config.task == "image" and len(model.labels) == 1000
    return model


@pytest.fixture(scope="module")
def photo_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
                 photo_model: ModelUnderTest) -> Iterator[ServerProcess]:
    process = ServerProcess(models_dir, tmp_path_factory.mktemp("photo-server"), {"SERVE_MODELS": photo_model.name})
    process.start().wait_ready()
    yield process
    process.stop()


def encoded(photo: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    photo.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def reference_tensor(photo: Image.Image) -> np.ndarray:
    """The input the EfficientNet-Lite0 weights expect, written out independently of `image_to_array`:
    torchvision's Resize(256, bicubic) (longer side truncated), CenterCrop(224) (offsets rounded), then
    (pixel - 127) / 128 as the TensorFlow Lite models take it."""
    width, height = photo.size
    if width <= height:
        size = (256, int(256 * height / width))
    else:
        size = (int(256 * width / height), 256)
    resized = photo.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    left, top = int(round((resized.width - 224) / 2.0)), int(round((resized.height - 224) / 2.0))
    pixels = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    return ((pixels - 127 / 255) / (128 / 255)).transpose(2, 0, 1)


def test_sample_photos_get_sensible_labels(photo_server: ServerProcess, photo_model: ModelUnderTest,
                                           photos: dict[str, Image.Image]) -> None:
    with photo_server.client() as client:
        for index, (name, sensible) in enumerate(SENSIBLE_TOP1.items()):
            fmt = ("JPEG", "PNG")[index % 2]
            data = encoded(photos[name], fmt)
            upload = {"file": (f"{name}.{fmt.lower()}", data, f"image/{fmt.lower()}")}
            response = client.post("/predict", files=upload)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model"] == PHOTO_MODEL
            assert body["label"] in sensible, (name, body["top_k"])
            assert_prediction(body, photo_model.image_probabilities(data), photo_model.labels, 5)

        response = client.post("/predict", files={"file": ("clock.png", encoded(photos["clock"], "PNG"), "image/png")})
        assert "wall clock" in [item["label"] for item in response.json()["top_k"]], response.text


def test_the_readme_photo(photo_server: ServerProcess) -> None:
    photo = Path(__file__).resolve().parents[2] / "examples" / "chelsea.jpg"
    with photo_server.client() as client:
        response = client.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.json()["label"] in SENSIBLE_TOP1["chelsea"], response.text


@pytest.mark.parametrize("name", ["chelsea", "rocket", "page"])
def test_server_tensor_is_the_reference_pipeline(photo_server: ServerProcess, photo_model: ModelUnderTest,
                                                 photos: dict[str, Image.Image], name: str) -> None:
    """chelsea (451x300), rocket (640x427: the crop offset rounds) and page (384x191, greyscale source): the
    shared preprocessing equals the reference to float precision, and what the server answers for the
    uploaded file is what the model answers for the reference tensor."""
    data = encoded(photos[name], "JPEG")
    with Image.open(io.BytesIO(data)) as decoded:
        decoded.load()
    expected = reference_tensor(decoded)
    np.testing.assert_allclose(image_to_array(decoded, photo_model.config.preprocessing), expected, atol=1e-5)

    with photo_server.client() as client:
        response = client.post("/predict", files={"file": (f"{name}.jpg", data, "image/jpeg")}, data={"top_k": "10"})
    assert response.status_code == 200, response.text
    input_name = photo_model.config.inputs[0].name
    assert_prediction(response.json(), photo_model.probabilities({input_name: expected[None]})[0],
                      photo_model.labels, 10)
