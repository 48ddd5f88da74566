"""`python -m training text` end to end: TextCNN from scratch and a (tiny) transformer fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer
from training_support import check_published

from model_repository import ModelConfig
from training.cli import main

SMALL_TEXTCNN = ["--embedding-dim", "16", "--filters", "8", "--vocab-size", "300", "--max-length", "32"]


def serve(directory: Path, config: ModelConfig, texts: list[str]) -> np.ndarray:
    """Logits as the server computes them: tokenizer.json, truncation, padding to the longest text."""
    spec = config.preprocessing
    tokenizer = Tokenizer.from_file(str(directory / spec.tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=spec.max_length)
    rows = [e.ids for e in tokenizer.encode_batch([t.lower() if spec.lowercase else t for t in texts])]
    width = max(map(len, rows))
    ids = np.array([row + [spec.pad_token_id] * (width - len(row)) for row in rows], dtype=np.int64)
    mask = np.array([[1] * len(row) + [0] * (width - len(row)) for row in rows], dtype=np.int64)
    session = ort.InferenceSession(str(directory / config.onnx_file))
    return session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]


def check_text_model(directory: Path, atol: float = 1e-4) -> ModelConfig:
    """Inputs, saved tokenizer, and padding invariance as served (INT8 models get a looser `atol`: dynamic
    quantization scales activations per batch)."""
    config = check_published(directory)
    assert [spec.model_dump() for spec in config.inputs] == [
        {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
        {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"]},
    ]
    saved = json.loads((directory / "tokenizer.json").read_text())
    assert saved["padding"] is None and saved["truncation"]["max_length"] == config.preprocessing.max_length
    short = "a warm film"
    long = "the performances are wonderful and the script is sharp , " * 10
    alone = serve(directory, config, [short])[0]
    batched = serve(directory, config, [long, short, "dull"])
    assert np.abs(alone - batched[1]).max() <= atol
    assert batched.shape == (3, len(config.labels))
    return config


def test_textcnn_on_a_small_csv(tmp_path: Path, sentiment_csv: Path, capsys) -> None:
    models = tmp_path / "models"
    args = [
        "text",
        "--train",
        str(sentiment_csv),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--label-names",
        "negative,positive",
        "--test-fraction",
        "0.25",
        "--val-fraction",
        "0.25",
        "--epochs",
        "3",
        "--name",
        "reviews",
        "--models-dir",
        str(models),
        *SMALL_TEXTCNN,
    ]
    assert main(args) == 0, capsys.readouterr().err[-3000:]
    config = check_text_model(models / "reviews" / "1")
    assert config.labels == ["negative", "positive"]
    assert config.training["label_values"] == ["neg", "pos"]
    assert config.preprocessing.pad_token_id == 0 and config.preprocessing.lowercase
    assert config.metrics.num_examples == 6 and config.metrics.roc_auc is not None
    assert config.training["architecture"].startswith("TextCNN(vocab=")


@pytest.mark.shared_data
def test_textcnn_on_sst2_slice_with_int8(tmp_path: Path, sst2_slice: tuple[Path, Path], capsys) -> None:
    train, dev = sst2_slice
    models = tmp_path / "models"
    args = [
        "text",
        "--train",
        str(train),
        "--eval",
        str(dev),
        "--text-column",
        "sentence",
        "--name",
        "sst2",
        "--models-dir",
        str(models),
        "--quantize",
        "--max-quantization-drop",
        "0.05",
        *[
            "--epochs",
            "3",
            "--lr",
            "5e-3",
            "--embedding-dim",
            "32",
            "--filters",
            "32",
            "--vocab-size",
            "2000",
        ],
    ]
    assert main(args) == 0, capsys.readouterr().err[-3000:]
    config = check_text_model(models / "sst2" / "1", atol=0.1)
    assert config.metrics.split == "dev.tsv (200 texts), INT8 ONNX"
    assert config.training["quantization"]["method"].startswith("dynamic")
    assert config.metrics.accuracy > 0.55  # majority class: 0.505
    assert config.training["quantization"]["int8_accuracy"] == config.metrics.accuracy


def test_transformer_fine_tune_with_tiny_bert(
    tmp_path: Path, sentiment_csv: Path, tiny_bert_dir: Path, capsys
) -> None:
    models = tmp_path / "models"
    args = [
        "text",
        "--train",
        str(sentiment_csv),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--arch",
        "transformer",
        "--pretrained",
        str(tiny_bert_dir),
        "--max-length",
        "48",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--test-fraction",
        "0.25",
        "--val-fraction",
        "0.25",
        "--name",
        "tiny-bert",
        "--models-dir",
        str(models),
        "--quantize",
        "--max-quantization-drop",
        "1",
    ]
    assert main(args) == 0, capsys.readouterr().err[-3000:]
    config = check_text_model(models / "tiny-bert" / "1", atol=0.1)
    assert config.preprocessing.pad_token_id == 0 and not config.preprocessing.lowercase
    assert config.preprocessing.max_length == 48
    assert config.training["architecture"] == f"BertForSequenceClassification from {tiny_bert_dir}"
    assert config.training["quantization"]["int8_bytes"] < config.training["quantization"]["fp32_bytes"]


def test_transformer_needs_a_model_folder(tmp_path: Path, sentiment_csv: Path, capsys) -> None:
    args = [
        "text",
        "--train",
        str(sentiment_csv),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--arch",
        "transformer",
        "--pretrained",
        str(tmp_path),
        "--name",
        "x",
        "--models-dir",
        str(tmp_path),
    ]
    assert main(args) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: {tmp_path}: no tokenizer.json beside the pretrained weights"
    )
