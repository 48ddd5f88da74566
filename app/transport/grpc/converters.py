"""Between the protocol's protobuf messages and the data plane's values: a `ModelInferRequest`'s tensors as
arrays, the output arrays as a `ModelInferResponse`, and the metadata and configuration as their messages.

The tensors' values are decoded and checked by the data plane (`app.dataplane.tensors`), as REST's are: an
input comes either in `raw_input_contents` (every input then does, in order) or in the typed `contents` field
of its datatype (FP16 has none: raw only). Outputs always go in `raw_output_contents`, as Triton sends them.
"""

from __future__ import annotations

import numpy as np

from app.dataplane.metadata import ModelConfiguration, ModelMetadata, ServerMetadata, TensorMetadata
from app.dataplane.tensors import DATATYPE_OF_DTYPE, from_bytes, from_values, raw_size, tensor_head
from app.errors import InvalidInput
from app.transport.grpc.generated import grpc_service_pb2 as pb
from app.transport.grpc.generated import model_config_pb2

# The `InferTensorContents` field that holds each datatype's values (grpc_service.proto).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def request_tensors(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's input tensors as arrays of their declared datatype and shape, or `InvalidInput`."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: with raw "
                           "contents, every input takes one, in order")
    if not request.inputs:
        raise InvalidInput("the request has no inputs")
    tensors: dict[str, np.ndarray] = {}
    for position, item in enumerate(request.inputs):
        if item.name in tensors:
            raise InvalidInput(f"input {item.name!r} appears more than once")
        head = tensor_head(item.name, item.datatype, list(item.shape))
        if raw:
            if item.HasField("contents"):
                raise InvalidInput(f"input {item.name!r} has both contents and raw_input_contents")
            data = raw[position]
            size = raw_size(head)
            if size is not None and len(data) != size:
                raise InvalidInput(f"input {item.name!r}: {len(data)} raw bytes for shape {list(item.shape)} of "
                                   f"{item.datatype}, which takes {size}")
            tensors[item.name] = from_bytes(head, data)
            continue
        field = CONTENTS_FIELDS.get(item.datatype)
        if field is None:
            raise InvalidInput(f"input {item.name!r}: {item.datatype} values go in raw_input_contents")
        tensors[item.name] = from_values(head, list(getattr(item.contents, field)))
    return tensors


def infer_response(model_name: str, model_version: str, request_id: str,
                   outputs: dict[str, np.ndarray]) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    for name, array in outputs.items():
        response.outputs.add(name=name, datatype=DATATYPE_OF_DTYPE[array.dtype], shape=array.shape)
        response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
    return response


def server_metadata_response(metadata: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=metadata.name, version=metadata.version, extensions=metadata.extensions)


def _tensors(tensors: list[TensorMetadata]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(name=item.name, datatype=item.datatype, shape=item.shape)
            for item in tensors]


def model_metadata_response(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(name=metadata.name, versions=metadata.versions, platform=metadata.platform,
                                    inputs=_tensors(metadata.inputs), outputs=_tensors(metadata.outputs))


def model_config_response(config: ModelConfiguration) -> pb.ModelConfigResponse:
    """Triton's model configuration: the dims leave out the batch dimension, as REST's `/config` does."""

    def data_type(datatype: str) -> int:
        return model_config_pb2.DataType.Value("TYPE_" + datatype)

    return pb.ModelConfigResponse(config=model_config_pb2.ModelConfig(
        name=config.name,
        platform=config.platform,
        max_batch_size=config.max_batch_size,
        input=[model_config_pb2.ModelInput(name=item.name, data_type=data_type(item.datatype), dims=item.shape[1:])
               for item in config.inputs],
        output=[model_config_pb2.ModelOutput(name=item.name, data_type=data_type(item.datatype), dims=item.shape[1:])
                for item in config.outputs],
        parameters={"labels": model_config_pb2.ModelParameter(string_value=",".join(config.labels))},
    ))
