"""Shared by the training tests: small hand-written data and what a published model version must hold."""

from __future__ import annotations

import csv
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import onnx

from model_repository import ModelConfig, file_sha256, load_config
from model_repository.reference import ReferenceProfile, load_reference


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
    check_held_out_reference(load_reference(directory), config)
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


def check_held_out_reference(reference: ReferenceProfile | None, config: ModelConfig) -> None:
    """The reference profiles the held-out split the metrics measured: same samples, same accuracy, and each
    label predicted as often as its column of the confusion matrix says."""
    assert reference is not None and reference.source == "held_out"
    assert reference.description.startswith(f"held-out {config.training['test_split']}, ")
    assert reference.num_samples == config.metrics.num_examples
    assert reference.accuracy == config.metrics.accuracy
    predicted = np.asarray(config.metrics.confusion_matrix).sum(axis=0).tolist()
    assert list(reference.label_counts) == config.labels
    assert reference.label_counts == dict(zip(config.labels, predicted, strict=True))


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


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """`array` as an IDX file of unsigned bytes (MNIST's format), gzipped when `compress`."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
