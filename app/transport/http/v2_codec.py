"""The Open Inference Protocol v2 over HTTP: JSON and binary-extension request parsing, response encoding.

The tensors' values are decoded and checked by the data plane (`app.dataplane.tensors`); this module reads
them from the wire. Binary tensor data extension (as Triton and its clients use it): the header
`Inference-Header-Content-Length: N` says the body starts with N bytes of JSON; each tensor whose
`parameters.binary_data_size` is set takes its bytes, in order, from what follows.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.dataplane.tensors import DATATYPE_OF_DTYPE, from_bytes, from_values, raw_size, tensor_head
from app.errors import InvalidInput, UnprocessableInput

HEADER_LENGTH = "inference-header-content-length"


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, dict[str, np.ndarray]]:
    """The request and its input tensors as arrays of the declared datatype and shape."""
    if header_length is not None:
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise InvalidInput(f"{HEADER_LENGTH} {header_length!r} does not fit a {len(body)}-byte body")
        head, binary = body[: int(header_length)], memoryview(body)[int(header_length):]
    else:
        head, binary = body, memoryview(b"")
    try:
        request = InferenceRequest.model_validate_json(head)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise UnprocessableInput(f"invalid inference request: {problems}") from None
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for item in request.inputs:
        if item.name in tensors:
            raise InvalidInput(f"input {item.name!r} appears more than once")
        tensor = tensor_head(item.name, item.datatype, item.shape)
        size = item.parameters.get("binary_data_size")
        if size is None:
            tensors[item.name] = from_values(tensor, item.data)
            continue
        expected = raw_size(tensor)
        if (not isinstance(size, int) or size < 0 or expected is not None and size != expected
                or offset + size > len(binary)):
            raise InvalidInput(f"input {item.name!r}: binary_data_size {size} does not match shape "
                               f"{item.shape} of {item.datatype} or the bytes sent")
        tensors[item.name] = from_bytes(tensor, binary[offset:offset + size])
        offset += size
    return request, tensors


def encode_response(
    model_name: str,
    model_version: str,
    request: InferenceRequest,
    outputs: dict[str, np.ndarray],
) -> tuple[bytes, int | None]:
    """The response body and, when any output is sent as binary, the JSON header's length."""
    binary_by_default = bool(request.parameters.get("binary_data_output", False))
    wanted_binary = {item.name: bool(item.parameters.get("binary_data", binary_by_default))
                     for item in request.outputs or []}
    entries = []
    blobs = []
    for name, array in outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": DATATYPE_OF_DTYPE[array.dtype],
            "shape": list(array.shape),
        }
        if wanted_binary.get(name, binary_by_default):
            blob = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": entries}
    if request.id is not None:
        document["id"] = request.id
    head = json.dumps(document, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
