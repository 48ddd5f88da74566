"""reference.json, the reference profile of a version: written by training for what it publishes, by
`python -m training reference` for the bundled models, equal to what the server answers, and refused when
malformed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from training_support import check_held_out_reference, check_published, write_idx

from model_repository import discover_models, load_config
from model_repository.reference import CONFIDENCE_EDGES, ReferenceProfileError, load_reference
from tests.serving.support import REPO_ROOT, ServerProcess, png_bytes
from training.cli import main

MODELS_DIR = REPO_ROOT / "models"
PHOTO_MODEL = "efficientnet-lite0-imagenet"


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def histogram(confidence: np.ndarray) -> list[int]:
    """Samples per bin (lower edge excluded, upper included) on the reference's edges."""
    upper = np.asarray(CONFIDENCE_EDGES)
    lower = np.concatenate([[-np.inf], upper[:-1]])
    return [int(((confidence > low) & (confidence <= high)).sum()) for low, high in zip(lower, upper, strict=True)]


def test_trained_version_carries_the_reference_of_its_test_set(tmp_path: Path) -> None:
    """Train on IDX files with a known t10k split, then profile that split independently: ONNX Runtime on
    hand-normalised pixels, softmax, argmax. The labels, accuracy, histogram and threshold match the
    reference, and its accuracy is the one metrics.json measured with PyTorch."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * 255 / 16), 0, 255).astype(np.uint8)
    data = tmp_path / "digits"
    data.mkdir()
    for prefix, part in (("train", slice(0, 1400)), ("t10k", slice(1400, None))):
        write_idx(data / f"{prefix}-images-idx3-ubyte", pixels[part], compress=False)
        write_idx(data / f"{prefix}-labels-idx1-ubyte", digits.target[part], compress=False)
    models = tmp_path / "models"
    args = ["image", "--idx-dir", str(data), "--name", "digits", "--models-dir", str(models)]
    assert main([*args, "--epochs", "3", "--batch-size", "64", "--cnn-widths", "8,16,32"]) == 0
    directory = models / "digits" / "1"
    config = check_published(directory)
    reference = load_reference(directory)

    spec = config.preprocessing
    test_pixels, test_labels = pixels[1400:], digits.target[1400:]
    inputs = ((test_pixels / 255 - spec.mean[0]) / spec.std[0]).astype(np.float32)[:, None]
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    probabilities = softmax(session.run(["logits"], {"pixel_values": inputs})[0].astype(np.float64))
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)

    assert reference.num_samples == len(test_labels) == 397
    assert reference.description == "held-out digits t10k (397 images), answered by the published model.onnx"
    assert reference.label_counts == {str(d): int((predicted == d).sum()) for d in range(10)}
    assert reference.accuracy == float((predicted == test_labels).mean()) == config.metrics.accuracy
    assert reference.confidence_counts == histogram(confidence)
    assert reference.low_confidence_threshold == pytest.approx(np.percentile(confidence, 5), abs=1e-6)


@pytest.mark.parametrize("name", ["mnist-cnn", "sst2-textcnn", PHOTO_MODEL])
def test_reference_command_reproduces_the_committed_reference(name: str, request, tmp_path: Path) -> None:
    """`python -m training reference` on a copy of a bundled version (without its reference.json) writes
    the committed file again."""
    data_dir = tmp_path / "no-data" if name == PHOTO_MODEL else request.getfixturevalue("shared_data")
    source = MODELS_DIR / name / "1"
    copy = tmp_path / name / "1"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("reference.json", "*.png"))
    assert main(["reference", "--model-dir", str(copy), "--data-dir", str(data_dir)]) == 0
    written = json.loads((copy / "reference.json").read_text())
    committed = json.loads((source / "reference.json").read_text())
    assert written.pop("low_confidence_threshold") == pytest.approx(committed.pop("low_confidence_threshold"),
                                                                  abs=1e-6)
    assert written == committed


def test_default_models_write_the_committed_photo_reference(tmp_path: Path) -> None:
    """`make models` publishes the photo model with the reference the `reference` command made."""
    models = tmp_path / "models"
    args = ["default-models", "--only", PHOTO_MODEL, "--models-dir", str(models), "--data-dir", str(tmp_path)]
    assert main(args) == 0
    written = json.loads((models / PHOTO_MODEL / "1" / "reference.json").read_text())
    committed = json.loads((MODELS_DIR / PHOTO_MODEL / "1" / "reference.json").read_text())
    assert written.pop("low_confidence_threshold") == pytest.approx(committed.pop("low_confidence_threshold"),
                                                                  abs=1e-6)
    assert written == committed


def test_reference_command_names_what_it_cannot_do(tmp_path: Path, capsys) -> None:
    copy = tmp_path / "mine" / "1"
    shutil.copytree(MODELS_DIR / "mnist-cnn" / "1", copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "name": "mine"}))
    assert main(["reference", "--model-dir", str(copy)]) == 1
    assert "'mine' is not a bundled model" in capsys.readouterr().err

    missing = tmp_path / "no-data"
    assert main(["reference", "--model-dir", str(MODELS_DIR / "mnist-cnn" / "1"), "--data-dir", str(missing)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {missing / 'mnist'} not found")
    assert main(["reference", "--model-dir", str(tmp_path / "nothing")]) == 1
    assert "config.json" in capsys.readouterr().err


def test_every_bundled_model_carries_a_valid_reference() -> None:
    configs = {name: load_config(MODELS_DIR / name / "1") for name in discover_models(MODELS_DIR)}
    assert set(configs) == {"mnist-cnn", "sst2-textcnn", PHOTO_MODEL}
    for name, config in configs.items():
        reference = load_reference(MODELS_DIR / name / "1")
        if name == PHOTO_MODEL:
            assert (reference.source, reference.num_samples, reference.accuracy) == ("sample_photos", 21, None)
            assert "weak reference" in reference.description
            assert list(reference.label_counts) == config.labels
        else:
            check_held_out_reference(reference, config)
        assert 0 < reference.low_confidence_threshold < 1


def _server_answers(server: ServerProcess, model: str, requests: list[dict]) -> tuple[list[str], list[float]]:
    labels, scores = [], []
    with server.client() as client:
        for request in requests:
            response = client.post("/predict", params={"model": model, "top_k": 1}, **request)
            assert response.status_code == 200, response.text
            for prediction in response.json()["predictions"]:
                labels.append(prediction["label"])
                scores.append(prediction["score"])
    return labels, scores


def _photo_requests() -> list[dict]:
    from training.data.sample_photos import sample_photos

    files = [("file", (f"{name}.png", png_bytes(np.asarray(photo)), "image/png"))
             for name, photo in sample_photos().items()]
    return [{"files": files[start:start + 8]} for start in range(0, len(files), 8)]


def _sst2_requests(shared_data: Path) -> list[dict]:
    lines = (shared_data / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split("\t")[0].strip() for line in lines]
    return [{"json": {"text": texts[start:start + 32]}} for start in range(0, len(texts), 32)]


@pytest.mark.parametrize("name", [PHOTO_MODEL, "sst2-textcnn"])
def test_reference_is_what_the_server_answers(name: str, request, tmp_path: Path) -> None:
    """The held-out inputs sent over HTTP to a real server: its labels and top-1 scores give the reference's
    label counts, confidence histogram and 5th-percentile threshold."""
    requests = _photo_requests() if name == PHOTO_MODEL else _sst2_requests(request.getfixturevalue("shared_data"))
    server = ServerProcess(MODELS_DIR, tmp_path, {"SERVE_MODELS": name}).start().wait_ready()
    try:
        labels, scores = _server_answers(server, name, requests)
    finally:
        server.stop()
    reference = load_reference(MODELS_DIR / name / "1")
    counts = {label: labels.count(label) for label in reference.label_counts}
    assert counts == reference.label_counts
    assert histogram(np.asarray(scores)) == reference.confidence_counts
    assert np.percentile(scores, 5) == pytest.approx(reference.low_confidence_threshold, abs=1e-6)


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "Invalid JSON"),
    ('{"source": "held_out"}', "Field required"),
    ("SOURCE_MOON", "Input should be 'held_out', 'sample_photos' or 'live_baseline'"),
    ("COUNTS_OFF", "label_counts must add up to num_samples"),
    ("BINS_SHORT", "confidence_counts needs one count per edge"),
])
def test_malformed_reference_is_refused_naming_the_file_and_the_problem(content: str, problem: str,
                                                                        tmp_path: Path) -> None:
    valid = json.loads((MODELS_DIR / "mnist-cnn" / "1" / "reference.json").read_text())
    broken = {
        "SOURCE_MOON": {**valid, "source": "moon"},
        "COUNTS_OFF": {**valid, "label_counts": {**valid["label_counts"], "0": valid["label_counts"]["0"] + 1}},
        "BINS_SHORT": {**valid, "confidence_counts": valid["confidence_counts"][1:]},
    }
    text = json.dumps(broken[content]) if content in broken else content
    (tmp_path / "reference.json").write_text(text)
    with pytest.raises(ReferenceProfileError) as error:
        load_reference(tmp_path)
    assert str(tmp_path / "reference.json") in str(error.value) and problem in str(error.value)


def test_a_version_without_reference_has_none(tmp_path: Path) -> None:
    assert load_reference(tmp_path) is None
