"""Tensors of the Open Inference Protocol v2: JSON and binary-extension request parsing, response encoding.

Binary tensor data extension (as Triton and its clients use it): the header
`Inference-Header-Content-Length: N` says the body starts with N bytes of JSON; each tensor whose
`parameters.binary_data_size` is set takes its bytes, in order, from what follows.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.errors import InvalidInput, UnprocessableInput

HEADER_LENGTH = "inference-header-content-length"

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
DATATYPE_OF_DTYPE = {dtype: name for name, dtype in DATATYPES.items()}
CONFIG_DTYPE_TO_DATATYPE = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}
# No tensor dimension is larger (numpy's limit is 2**63 - 1; a body under any limit holds far fewer values).
MAX_DIMENSION = 2**31 - 1


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
        dtype = DATATYPES.get(item.datatype)
        if dtype is None:
            raise InvalidInput(f"input {item.name!r}: unsupported datatype {item.datatype!r}")
        if any(dim < 0 or dim > MAX_DIMENSION for dim in item.shape):
            raise InvalidInput(f"input {item.name!r}: shape {item.shape} has a negative or too large "
                               "dimension")
        count = math.prod(item.shape)  # Python integers: no int64 wrap-around
        size = item.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size != count * dtype.itemsize or offset + size > len(binary):
                raise InvalidInput(f"input {item.name!r}: binary_data_size {size} does not match shape "
                                   f"{item.shape} of {item.datatype} or the bytes sent")
            array = _reshape(item, np.frombuffer(binary[offset:offset + size], dtype=dtype), count)
            offset += size
        else:
            if item.data is None:
                raise InvalidInput(f"input {item.name!r} has no data")
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # out of range: refused below
                    values = np.asarray(item.data, dtype=dtype)
            except (ValueError, TypeError, OverflowError):
                raise InvalidInput(f"input {item.name!r}: data does not hold {count} {item.datatype} values "
                                   f"for shape {item.shape}") from None
            array = _reshape(item, values, count)
            if dtype.kind == "f" and np.isnan(array).any():  # JSON null becomes NaN; JSON has no NaN
                raise InvalidInput(f"input {item.name!r}: data holds null or NaN values")
        if dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidInput(f"input {item.name!r}: data holds NaN, infinite or out-of-range "
                               f"{item.datatype} values")
        tensors[item.name] = array
    return request, tensors


def _reshape(item: RequestInput, values: np.ndarray, count: int) -> np.ndarray:
    """`values` in the declared shape, or `InvalidInput` when they do not fill it."""
    try:
        return values.reshape(item.shape)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input {item.name!r}: data does not hold {count} {item.datatype} values "
                           f"for shape {item.shape}") from None


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
