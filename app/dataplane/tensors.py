"""Tensors of the Open Inference Protocol v2, decoded and checked whatever their wire format.

A transport reads a tensor's name, datatype and shape (`tensor_head`), then its values: raw bytes
(`from_bytes`: the REST binary extension, gRPC's `raw_input_contents`; `raw_size` says how many) or a list of
values (`from_values`: JSON `data`, gRPC's typed contents). Either way the result is an array of the declared
datatype and shape with finite values, or `InvalidInput`. A BYTES tensor holds variable-length elements (raw:
each a 4-byte little-endian length, then its bytes, as Triton writes them) in an object array.

`model_inputs` checks a request's tensors against a model's inputs and splits them into the rows the batcher
takes; or, for a request of one BYTES input named after the model's task (`text` or `image`), reads the texts
or encoded images that the server then preprocesses as it does `/predict`'s (`EncodedItems`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from app.errors import InvalidInput
from app.models.served_model import ServedModel

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
BYTES = "BYTES"  # variable-length elements: UTF-8 texts, or encoded images
_OBJECT = np.dtype(object)
_LENGTH = struct.Struct("<I")
# The datatype of each tensor dtype a model's config.json may declare.
CONFIG_DTYPE_TO_DATATYPE = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}
# No tensor dimension is larger (numpy's limit is 2**63 - 1; a body under any limit holds far fewer values).
MAX_DIMENSION = 2**31 - 1

Row = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class EncodedItems:
    """A request's texts or encoded images (one BYTES input), to preprocess as `/predict`'s are."""

    kind: Literal["text", "image"]
    items: list[Any]  # str for texts, bytes for images


ModelInputs = list[Row] | EncodedItems


@dataclass(slots=True)
class TensorHead:
    """A tensor's declared name, datatype and shape, checked: `dtype` and `count` (values it holds) follow."""

    name: str
    datatype: str
    shape: list[int]
    dtype: np.dtype[Any]
    count: int


def tensor_head(name: str, datatype: str, shape: list[int]) -> TensorHead:
    dtype = _OBJECT if datatype == BYTES else DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(f"input {name!r}: unsupported datatype {datatype!r}")
    if any(dim < 0 or dim > MAX_DIMENSION for dim in shape):
        raise InvalidInput(f"input {name!r}: shape {shape} has a negative or too large dimension")
    return TensorHead(name, datatype, shape, dtype, math.prod(shape))  # Python integers: no int64 wrap-around


def raw_size(head: TensorHead) -> int | None:
    """How many bytes the tensor's raw form has; None for BYTES, whose elements say their own lengths."""
    return None if head.datatype == BYTES else head.count * head.dtype.itemsize


def from_bytes(head: TensorHead, raw: memoryview | bytes) -> np.ndarray:
    """The tensor held by `raw`, which has exactly `raw_size(head)` bytes (the transport checks the size)."""
    if head.datatype == BYTES:
        return _reshape(head, _elements(head, memoryview(raw)))
    return _finite(head, _reshape(head, np.frombuffer(raw, dtype=head.dtype)))


def _elements(head: TensorHead, raw: memoryview) -> np.ndarray:
    """BYTES elements, each a 4-byte little-endian length and then that many bytes, filling `raw` exactly."""
    elements = []
    offset = 0
    while offset < len(raw) and len(elements) <= head.count:
        if offset + _LENGTH.size > len(raw):
            raise InvalidInput(f"input {head.name!r}: BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidInput(f"input {head.name!r}: a BYTES element of {length} bytes runs past the data")
        elements.append(bytes(raw[offset:offset + length]))
        offset += length
    if len(elements) != head.count or offset != len(raw):
        raise _does_not_fill(head)
    array = np.empty(len(elements), dtype=_OBJECT)
    array[:] = elements
    return array


def from_values(head: TensorHead, values: Any) -> np.ndarray:
    """The tensor held by `values`, a flat or nested list of numbers (None when the request sent none)."""
    if values is None:
        raise InvalidInput(f"input {head.name!r} has no data")
    if head.datatype == BYTES:
        return _reshape(head, _byte_values(head, values))
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # out of range: refused below
            array = np.asarray(values, dtype=head.dtype)
    except (ValueError, TypeError, OverflowError):
        raise _does_not_fill(head) from None
    array = _reshape(head, array)
    if head.dtype.kind == "f" and np.isnan(array).any():  # JSON null becomes NaN; JSON has no NaN
        raise InvalidInput(f"input {head.name!r}: data holds null or NaN values")
    return _finite(head, array)


def _byte_values(head: TensorHead, values: Any) -> np.ndarray:
    """BYTES elements given as a flat or nested list of strings (JSON) or bytes (gRPC's `bytes_contents`)."""
    flat: list[Any] = []
    pending = [values]
    while pending:
        item = pending.pop()
        if isinstance(item, str | bytes):
            flat.append(item)
        elif isinstance(item, list | tuple):
            pending.extend(reversed(item))
        else:
            raise InvalidInput(f"input {head.name!r}: BYTES data holds {type(item).__name__}, not strings")
        if len(flat) > head.count:
            break
    array = np.empty(len(flat), dtype=_OBJECT)
    array[:] = flat
    return array


def _finite(head: TensorHead, array: np.ndarray) -> np.ndarray:
    if head.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(f"input {head.name!r}: data holds NaN, infinite or out-of-range {head.datatype} values")
    return array


def _reshape(head: TensorHead, values: np.ndarray) -> np.ndarray:
    try:
        return values.reshape(head.shape)
    except (ValueError, TypeError, OverflowError):
        raise _does_not_fill(head) from None


def _does_not_fill(head: TensorHead) -> InvalidInput:
    return InvalidInput(f"input {head.name!r}: data does not hold {head.count} {head.datatype} values "
                        f"for shape {head.shape}")


def model_shape(shape: list[int | str]) -> list[int]:
    """A config.json shape as the protocol writes it: -1 for a named (variable) dimension."""
    return [dim if isinstance(dim, int) else -1 for dim in shape]


def model_inputs(model: ServedModel, tensors: dict[str, np.ndarray]) -> ModelInputs:
    """The request's inputs for `model`: its texts or encoded images when it sends one BYTES input named after
    the model's task, else its tensors checked against the model's inputs and split into rows."""
    if any(array.dtype == _OBJECT for array in tensors.values()):
        return _encoded_items(model, tensors)
    return _rows(model, tensors)


def _encoded_items(model: ServedModel, tensors: dict[str, np.ndarray]) -> EncodedItems:
    kind = model.config.task
    array = tensors.get(kind)
    if len(tensors) != 1 or array is None or array.dtype != _OBJECT or array.shape[1:] not in ((), (1,)):
        raise InvalidInput(f"model {model.name!r} takes its {kind}s as one BYTES input named {kind!r} of shape "
                           f"[n] or [n, 1] (or the tensors {sorted(spec.name for spec in model.config.inputs)})")
    elements = array.reshape(-1).tolist()
    if kind == "image":
        if any(isinstance(element, str) for element in elements):
            raise InvalidInput("input 'image': send the encoded images as binary data (the binary tensor "
                               "extension, or gRPC), not as JSON strings")
        return EncodedItems(kind, elements)
    try:
        return EncodedItems(kind, [element if isinstance(element, str) else element.decode() for element in elements])
    except UnicodeDecodeError:
        raise InvalidInput("input 'text': the texts must be UTF-8") from None


def _rows(model: ServedModel, tensors: dict[str, np.ndarray]) -> list[Row]:
    """Check the tensors against the model's inputs and split them into rows for the batcher."""
    specs = {spec.name: spec for spec in model.config.inputs}
    if set(tensors) != set(specs):
        raise InvalidInput(f"model {model.name!r} takes inputs {sorted(specs)}; got {sorted(tensors)}")
    batch = None
    for name, array in tensors.items():
        spec = specs[name]
        datatype = CONFIG_DTYPE_TO_DATATYPE[spec.dtype]
        if array.dtype != DATATYPES[datatype]:
            raise InvalidInput(f"input {name!r} must be {datatype}")
        fixed_ok = len(array.shape) == len(spec.shape) and all(
            not isinstance(want, int) or got == want for got, want in zip(array.shape[1:], spec.shape[1:])
        )
        if not fixed_ok or array.shape[0] < 1 or 0 in array.shape:
            raise InvalidInput(f"input {name!r} has shape {list(array.shape)}; the model takes "
                               f"{model_shape(spec.shape)}")
        if batch is not None and array.shape[:2] != batch:
            raise InvalidInput("all inputs must share their batch (and sequence) dimensions")
        batch = array.shape[:2]
    count = next(iter(tensors.values())).shape[0]
    return [{name: array[index] for name, array in tensors.items()} for index in range(count)]
