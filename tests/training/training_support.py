"""Shared by the training tests: small hand-written data and what a published model version must hold."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import onnx

from model_repository import ModelConfig, file_sha256, load_config


def check_published(directory: Path) -> ModelConfig:
    """config.json loads, pins the ONNX file by sha256, matches the graph, and the reports are there."""
    config = load_config(directory)
    assert config.sha256 == file_sha256(directory / config.onnx_file)
    expected = {"config.json", "model.onnx", "metrics.json", "reference.json", "training_curves.png",
                "confusion_matrix.png"}
    if config.task == "text":
        expected.add("tokenizer.json")
    assert {path.name for path in directory.iterdir()} == expected  # one ONNX file, no external data
    assert json.loads((directory / "metrics.json").read_text()) == config.metrics.model_dump()
    graph = onnx.load(str(directory / config.onnx_file)).graph
    assert [i.name for i in graph.input] == [spec.name for spec in config.inputs]
    assert graph.output[0].name == "logits"
    for value, spec in zip(graph.input, config.inputs, strict=True):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == spec.shape
    assert config.training["epochs_run"] >= 1 and config.training["seed"] == 0
    assert config.training["torch_version"]
    assert config.training["parameters"] > 0
    return config


POSITIVE = [
    "a warm, funny and beautifully acted film",
    "one of the best movies i have seen this year",
    "the performances are wonderful and the script is sharp",
    "a delightful story that kept me smiling from start to finish",
    "brilliant direction and a moving, heartfelt ending",
    "an absolute joy to watch , clever and charming",
    "the cast is superb and the music is lovely",
    "a gripping thriller with great twists",
    "touching , honest and often hilarious",
    "i loved every minute of this remarkable film",
    "a smart , stylish and entertaining ride",
    "the best comedy of the summer , pure fun",
]
NEGATIVE = [
    "a dull , lifeless film with no redeeming qualities",
    "one of the worst movies i have seen this year",
    "the acting is wooden and the script is a mess",
    "a tedious story that made me check my watch",
    "clumsy direction and a silly , pointless ending",
    "an absolute bore , stupid and predictable",
    "the cast is wasted and the music is awful",
    "a sloppy thriller with no suspense at all",
    "flat , dishonest and painfully unfunny",
    "i hated every minute of this terrible film",
    "a dumb , ugly and boring mess",
    "the worst comedy of the summer , no fun at all",
]


def write_table(path: Path, rows: list[dict[str, str]], delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path
