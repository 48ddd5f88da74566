"""What the Open Inference Protocol v2 says about the server and a model: metadata and configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.dataplane.tensors import CONFIG_DTYPE_TO_DATATYPE, model_shape
from app.models.served_model import ServedModel

SERVER_NAME = "onnx-classifier-serving"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ("binary_tensor_data", "model_configuration")
PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: list[str]


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]  # -1 for a variable dimension; the first is the batch


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


@dataclass(frozen=True, slots=True)
class ModelConfiguration:
    """Triton's model configuration extension: the batching limit, tensors and labels."""

    name: str
    platform: str
    max_batch_size: int
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    labels: list[str]


@dataclass(frozen=True, slots=True)
class ModelReadiness:
    name: str
    ready: bool


def server_metadata() -> ServerMetadata:
    return ServerMetadata(SERVER_NAME, SERVER_VERSION, list(EXTENSIONS))


def _tensors(specs: list[Any]) -> list[TensorMetadata]:
    return [TensorMetadata(spec.name, CONFIG_DTYPE_TO_DATATYPE[spec.dtype], model_shape(spec.shape)) for spec in specs]


def model_metadata(model: ServedModel) -> ModelMetadata:
    return ModelMetadata(model.name, [str(model.config.version)], PLATFORM, _tensors(model.config.inputs),
                         _tensors(model.config.outputs))


def model_configuration(model: ServedModel) -> ModelConfiguration:
    return ModelConfiguration(model.name, PLATFORM, model.max_batch_size, _tensors(model.config.inputs),
                              _tensors(model.config.outputs), list(model.config.labels))
