"""Model-quality drift through a real Prometheus, on data the repository's packages ship: the real server with
mnist-cnn and its reference.json (MNIST test digits), scraped every second by the `prometheus` binary with
the compose config and the repository's rules, their 30-minute windows and the quality alerts' `for:`
shortened. Handwritten digits keep the drift under "watch" and ModelServerPredictionDrift quiet; photos
(scikit-image's and scikit-learn's samples, which the digit model was never meant to see) push it over "act"
and the alert fires. scripts/drift_demo.py does the same for the text model on ../shared/data.
"""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.serving.support import ServerProcess, mnist_digits, png_bytes

from .test_monitoring import ALERTS, MODELS_DIR, SERVICE_JOB, PrometheusProcess, query, write_test_config

MODEL = "mnist-cnn"
WINDOW = "[60s]"  # long enough to hold a stream sent on a busy machine
SENT_PER_STREAM = 600  # over the rules' 500-answer guard within one window
PER_REQUEST = 50
DRIFT = f'job_model_version:modelserver_prediction_drift:js_distance30m{{job="{SERVICE_JOB}", model="{MODEL}"}}'
ALERT = "ModelServerPredictionDrift"


def quality_rules() -> dict[str, Any]:
    """alerts.yml with the windows shortened to WINDOW and the quality alerts firing at once."""
    rules = yaml.safe_load(ALERTS.read_text().replace("[30m]", WINDOW))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in (ALERT, "ModelServerLowConfidence"):
                rule["for"] = "0s"
    return rules


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, PrometheusProcess]]:
    server = ServerProcess(MODELS_DIR, tmp_path_factory.mktemp("quality-server"),
                           {"SERVE_MODELS": MODEL, "SERVE_WARMUP_RUNS": "0"})
    config_dir = tmp_path_factory.mktemp("quality-prometheus")
    prometheus = PrometheusProcess(config_dir)
    try:
        server.start().wait_ready()
        write_test_config(config_dir, server.port, prometheus.port)
        (config_dir / ALERTS.name).write_text(yaml.safe_dump(quality_rules(), sort_keys=False))
        prometheus.start()
        yield server, prometheus
    finally:
        prometheus.stop()
        server.stop()


def digits() -> list[bytes]:
    pixels = mnist_digits(5000)  # sorted by class: shuffle
    random.Random(22).shuffle(pixels)
    return [png_bytes(image) for image in pixels[:SENT_PER_STREAM]]


def photos() -> list[bytes]:
    pytest.importorskip("skimage", reason="the sample photos ship with scikit-image (the train extra)")
    from training.data.sample_photos import sample_photos

    encoded = []
    for photo in sample_photos().values():
        buffer = io.BytesIO()
        photo.convert("RGB").resize((64, 64)).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return [encoded[index % len(encoded)] for index in range(SENT_PER_STREAM)]


def send(server: ServerProcess, images: list[bytes]) -> None:
    with server.client(timeout=60) as client:
        for start in range(0, len(images), PER_REQUEST):
            chunk = [base64.b64encode(image).decode() for image in images[start:start + PER_REQUEST]]
            answer = client.post("/predict", json={"image": chunk, "model": MODEL})
            assert answer.status_code == 200, answer.text


def drift(client: httpx.Client) -> float | None:
    result = query(client, DRIFT)
    return float(result[0]["value"][1]) if result else None


def firing(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/api/v1/alerts")
    assert response.status_code == 200, response.text
    return [alert for alert in response.json()["data"]["alerts"]
            if alert["labels"]["alertname"] == ALERT and alert["state"] == "firing"]


def test_digits_stay_under_watch_and_photos_fire_the_drift_alert(
        stack: tuple[ServerProcess, PrometheusProcess]) -> None:
    server, prometheus = stack
    photo_stream = photos()
    with httpx.Client(base_url=prometheus.url, timeout=5) as client:
        # The thresholds are recording rules: they exist once the rules were first evaluated.
        [watch_sample] = prometheus.wait_for(lambda c: query(c, "modelserver:prediction_drift:watch"), 30,
                                             "the first evaluation of the rules")
        [act_sample] = query(client, "modelserver:prediction_drift:act")
        watch, act = float(watch_sample["value"][1]), float(act_sample["value"][1])

        # The counters start at 0 in a first scrape, so that the window sees them grow.
        created = f'modelserver_predictions_total{{job="{SERVICE_JOB}", model="{MODEL}"}}'
        prometheus.wait_for(lambda c: query(c, created), 30, "a first scrape of the quality series")
        send(server, digits())
        # The window holds the digits once a scrape saw them all and a rule evaluation followed.
        answered = (f'job_model_version:modelserver_predictions:increase30m{{job="{SERVICE_JOB}", '
                    f'model="{MODEL}"}} >= {SENT_PER_STREAM * 0.9}')
        prometheus.wait_for(lambda c: query(c, answered), 60, "the digits in the window")
        in_distribution = drift(client)
        assert in_distribution is not None and in_distribution < watch, in_distribution
        assert not firing(client)

        send(server, photo_stream)
        alerts = prometheus.wait_for(firing, 40, f"{ALERT} to fire on photos")
        shifted = drift(client)
        assert shifted is not None and shifted >= act, shifted
    [alert] = alerts
    assert alert["labels"]["model"] == MODEL and alert["labels"]["version"] == "1", alert
