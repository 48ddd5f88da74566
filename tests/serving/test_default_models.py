"""Requests that name no model, through real servers: each input kind's default model (app.models.default_models).

With the bundled repository the photo model answers every image and the sentiment model every text that names
no model; SERVE_DEFAULT_MODELS wins over config.json; several models of a kind and no default give a 400 that
says how to choose; a default that cannot be honoured stops start-up; repository loads and unloads never move a
default behind the operator's back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from uvicorn.config import STARTUP_FAILURE

from tests.fuzz.images import UNUSUAL_IMAGES

from .conftest import MODELS_DIR, CopyModels, StartServer
from .support import (
    REPO_ROOT,
    ModelUnderTest,
    ServerProcess,
    assert_json_error,
    assert_prediction,
    b64,
    edit_config,
    exit_status,
    scrape,
    value,
)

PHOTO_MODEL = "efficientnet-lite0-imagenet"
KEY = "admin-key"
HEADERS = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def photo_model() -> ModelUnderTest:
    return ModelUnderTest.load(MODELS_DIR, PHOTO_MODEL)


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A server of the whole bundled repository, as `make serve` runs it."""
    server = ServerProcess(MODELS_DIR, tmp_path_factory.mktemp("bundled"), {}).start().wait_ready()
    with server.client() as client:
        yield client
    server.stop()


def defaults_in(client: httpx.Client) -> dict[str, dict[str, object]]:
    health = client.get("/health")
    assert health.status_code == 200, health.text
    return health.json()["default_models"]


def unflag(folder: Path) -> None:
    """A copied model whose config.json no longer says it is the default."""
    edit_config(folder / "1", default=False)


def test_the_readme_images_and_a_text_naming_no_model_get_the_bundled_defaults(
    bundled: httpx.Client, photo_model: ModelUnderTest, text_model: ModelUnderTest,
) -> None:
    for example in ("digit-7.png", "chelsea.jpg"):
        data = (REPO_ROOT / "examples" / example).read_bytes()
        expected = photo_model.image_probabilities(data)
        for response in (bundled.post("/predict", files={"file": (example, data)}),
                         bundled.post("/predict", content=data, headers={"Content-Type": "image/png"}),
                         bundled.post("/predict", json={"image": b64(data)})):
            assert response.status_code == 200, response.text
            assert response.json()["model"] == PHOTO_MODEL
            assert_prediction(response.json(), expected, photo_model.labels, 5)
    text = "a gripping, beautifully acted film"
    response = bundled.post("/predict", json={"text": text})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == text_model.name
    assert_prediction(response.json(), text_model.text_probabilities(text), text_model.labels, 2)


# A 1x5000 strip would become 256x1280000 pixels for the photo model: refused before decoding, as it should be.
TOO_LARGE_FOR_THE_PHOTO_MODEL = {"tall-strip-png"}


@pytest.mark.parametrize("name", sorted(set(UNUSUAL_IMAGES) - TOO_LARGE_FOR_THE_PHOTO_MODEL))
def test_every_unusual_image_naming_no_model_gets_the_photo_model_answer(
    name: str, bundled: httpx.Client, photo_model: ModelUnderTest,
) -> None:
    data = UNUSUAL_IMAGES[name]
    expected = photo_model.image_probabilities(data)
    for response in (bundled.post("/predict", content=data, headers={"Content-Type": "application/octet-stream"}),
                     bundled.post("/predict", json={"image": [b64(data)], "top_k": 3})):
        assert response.status_code == 200, (name, response.text)
        answer = response.json()
        assert answer["model"] == PHOTO_MODEL
        prediction, top_k = (answer["predictions"][0], 3) if "predictions" in answer else (answer, 5)
        assert_prediction(prediction, expected, photo_model.labels, top_k)


def test_an_image_too_large_for_the_photo_model_gets_413_naming_the_limit(bundled: httpx.Client) -> None:
    for name in TOO_LARGE_FOR_THE_PHOTO_MODEL:
        response = bundled.post("/predict", content=UNUSUAL_IMAGES[name], headers={"Content-Type": "image/png"})
        body = assert_json_error(response, 413, "payload_too_large")
        assert "resizing its shorter side to 256" in body["error"], body


def test_health_and_models_name_each_kinds_default(bundled: httpx.Client, image_model: ModelUnderTest,
                                                   text_model: ModelUnderTest) -> None:
    assert defaults_in(bundled) == {
        "image": {"model": PHOTO_MODEL, "chosen_by": "config.json", "loaded": True},
        "text": {"model": text_model.name, "chosen_by": "config.json", "loaded": True},
    }
    listed = bundled.get("/models").json()
    assert {model["name"]: model["default"] for model in listed["models"]} == {
        PHOTO_MODEL: True, image_model.name: False, text_model.name: True,
    }
    assert listed["default_models"] == defaults_in(bundled)


def test_a_request_naming_no_model_is_counted_under_the_model_that_answered(
    bundled: httpx.Client, digits: list[bytes],
) -> None:
    labels = {"protocol": "http", "route": "/predict", "model": PHOTO_MODEL, "status": "200"}
    before = value(scrape(bundled), "modelserver_requests_total", **labels)
    for digit in digits[:3]:
        assert bundled.post("/predict", files={"file": ("d.png", digit)}).status_code == 200
    assert value(scrape(bundled), "modelserver_requests_total", **labels) == before + 3


def test_serve_default_models_wins_over_config(start_server: StartServer, image_model: ModelUnderTest,
                                               digits: list[bytes]) -> None:
    server = start_server(MODELS_DIR, SERVE_DEFAULT_MODELS=f"image={image_model.name}").wait_ready()
    with server.client() as client:
        response = client.post("/predict", files={"file": ("d.png", digits[0])})
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), image_model.image_probabilities(digits[0]), image_model.labels, 5)
        assert response.json()["model"] == image_model.name
        assert defaults_in(client)["image"] == {"model": image_model.name, "chosen_by": "SERVE_DEFAULT_MODELS",
                                                "loaded": True}
        assert defaults_in(client)["text"]["chosen_by"] == "config.json"


def test_several_models_of_a_kind_and_no_default_say_how_to_choose(
    start_server: StartServer, copy_models: CopyModels, image_model: ModelUnderTest, digits: list[bytes],
) -> None:
    models = copy_models(image_model.name, PHOTO_MODEL, edit={PHOTO_MODEL: unflag})
    server = start_server(models).wait_ready()
    assert "several image models are served" in server.log() and "SERVE_DEFAULT_MODELS=image=NAME" in server.log()
    with server.client() as client:
        body = assert_json_error(client.post("/predict", files={"file": ("d.png", digits[0])}), 400, "invalid_input")
        for words in (image_model.name, PHOTO_MODEL, "`model` parameter", "SERVE_DEFAULT_MODELS=image=NAME",
                      '"default": true'):
            assert words in body["error"], body
        assert defaults_in(client) == {}
        assert_json_error(client.post("/predict", json={"text": "fine"}), 404, "model_not_found")
        named = client.post("/predict", params={"model": image_model.name}, files={"file": ("d.png", digits[0])})
        assert named.status_code == 200, named.text


def flag_default(folder: Path) -> None:
    edit_config(folder / "1", default=True)


@pytest.mark.parametrize(("case", "reason"), [
    ("not-served", "names 'resnet-50' as the image default, but this instance does not serve it"),
    ("not-selected", f"names '{PHOTO_MODEL}' as the image default, but this instance does not serve it"),
    ("other-kind", "names 'sst2-textcnn' as the image default, but it is a text model"),
    ("two-flagged", f"{PHOTO_MODEL} and mnist-cnn both say \"default\": true for image input"),
])
def test_a_default_that_cannot_be_honoured_fails_start_up(case: str, reason: str, copy_models: CopyModels,
                                                          tmp_path: Path, image_model: ModelUnderTest) -> None:
    models, env = MODELS_DIR, {}
    if case == "not-served":
        env = {"SERVE_DEFAULT_MODELS": "image=resnet-50"}
    elif case == "not-selected":
        env = {"SERVE_MODELS": image_model.name, "SERVE_DEFAULT_MODELS": f"image={PHOTO_MODEL}"}
    elif case == "other-kind":
        env = {"SERVE_DEFAULT_MODELS": "image=sst2-textcnn"}
    else:
        models = copy_models(image_model.name, PHOTO_MODEL, edit={image_model.name: flag_default})
    status, log = exit_status(models, tmp_path / "server", **env)
    assert status == STARTUP_FAILURE, log
    assert reason in log and "Application startup failed" in log, log


def test_a_malformed_default_setting_is_refused(tmp_path: Path) -> None:
    status, log = exit_status(MODELS_DIR, tmp_path / "server", SERVE_DEFAULT_MODELS=PHOTO_MODEL)
    assert status != 0, log
    assert f"SERVE_DEFAULT_MODELS entry '{PHOTO_MODEL}': write image=NAME or text=NAME" in log, log


def test_an_unloaded_default_is_not_replaced_silently(start_server: StartServer, image_model: ModelUnderTest,
                                                      photo_model: ModelUnderTest, digits: list[bytes]) -> None:
    """Unloading the photo model does not hand its requests to the digit model: they get 404 saying why,
    until it is loaded again."""
    server = start_server(MODELS_DIR, SERVE_API_KEY=KEY).wait_ready()
    upload = {"file": ("d.png", digits[0])}
    with server.client(headers=HEADERS) as client:
        assert client.post(f"/v2/repository/models/{PHOTO_MODEL}/unload").status_code == 200
        assert f"{PHOTO_MODEL}, the default image model, was unloaded" in server.log()
        body = assert_json_error(client.post("/predict", files=upload), 404, "model_not_found")
        assert f"the default image model '{PHOTO_MODEL}' is not loaded" in body["error"], body
        assert image_model.name in body["error"] and f"load {PHOTO_MODEL} again" in body["error"], body
        assert defaults_in(client)["image"] == {"model": PHOTO_MODEL, "chosen_by": "config.json", "loaded": False}
        named = client.post("/predict", params={"model": image_model.name}, files=upload)
        assert named.status_code == 200 and named.json()["model"] == image_model.name, named.text
        assert client.post(f"/v2/repository/models/{PHOTO_MODEL}/load").status_code == 200
        again = client.post("/predict", files=upload)
        assert again.status_code == 200, again.text
        assert again.json()["model"] == PHOTO_MODEL
        assert_prediction(again.json(), photo_model.image_probabilities(digits[0]), photo_model.labels, 5)


def test_a_loaded_model_takes_the_default_only_when_its_config_says_so(
    start_server: StartServer, copy_models: CopyModels, image_model: ModelUnderTest, digits: list[bytes],
) -> None:
    """A second image model loaded beside the only one does not turn requests naming no model into 400s; one
    whose config says `"default": true` takes them over, and the log says so."""
    models = copy_models(image_model.name, PHOTO_MODEL, edit={PHOTO_MODEL: unflag})
    server = start_server(models, SERVE_MODELS=image_model.name, SERVE_API_KEY=KEY).wait_ready()
    upload = {"file": ("d.png", digits[0])}
    with server.client(headers=HEADERS) as client:
        assert defaults_in(client)["image"] == {"model": image_model.name, "chosen_by": "only model", "loaded": True}
        assert client.post(f"/v2/repository/models/{PHOTO_MODEL}/load").status_code == 200
        response = client.post("/predict", files=upload)
        assert response.status_code == 200 and response.json()["model"] == image_model.name, response.text
        flag_default(models / PHOTO_MODEL)
        assert client.post(f"/v2/repository/models/{PHOTO_MODEL}/load").status_code == 200
        assert f"default image model is now {PHOTO_MODEL} (chosen by config.json, in place of " \
               f"{image_model.name})" in server.log()
        response = client.post("/predict", files=upload)
        assert response.status_code == 200 and response.json()["model"] == PHOTO_MODEL, response.text


def test_the_bundled_configs_choose_the_photo_and_sentiment_models() -> None:
    """What `make models` writes (training.defaults) and what the repository holds agree."""
    from training.defaults import DEFAULT_MODELS

    for name, recipe in DEFAULT_MODELS.items():
        config = json.loads((MODELS_DIR / name / "1" / "config.json").read_text())
        assert config["default"] == recipe.options(Path("data"), MODELS_DIR, 0, "cpu").default, name
