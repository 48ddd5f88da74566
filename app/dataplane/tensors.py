"""Tensors of the Open Inference Protocol v2, decoded and checked whatever their wire format.

A transport reads a tensor's name, datatype and shape (`tensor_head`), then its values: raw bytes
(`from_bytes`: the REST binary extension, gRPC's `raw_input_contents`) or a list of numbers (`from_values`:
JSON `data`, gRPC's typed contents). Either way the result is an array of the declared datatype and shape with
finite values, or `InvalidInput`. `rows_for` checks a request's tensors against a model's inputs and splits
them into the rows the batcher takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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
# The datatype of each tensor dtype a model's config.json may declare.
CONFIG_DTYPE_TO_DATATYPE = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}
# No tensor dimension is larger (numpy's limit is 2**63 - 1; a body under any limit holds far fewer values).
MAX_DIMENSION = 2**31 - 1

Row = dict[str, np.ndarray]


@dataclass(slots=True)
class TensorHead:
    """A tensor's declared name, datatype and shape, checked: `dtype` and `count` (values it holds) follow."""

    name: str
    datatype: str
    shape: list[int]
    dtype: np.dtype[Any]
    count: int


def tensor_head(name: str, datatype: str, shape: list[int]) -> TensorHead:
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(f"input {name!r}: unsupported datatype {datatype!r}")
    if any(dim < 0 or dim > MAX_DIMENSION for dim in shape):
        raise InvalidInput(f"input {name!r}: shape {shape} has a negative or too large dimension")
    return TensorHead(name, datatype, shape, dtype, math.prod(shape))  # Python integers: no int64 wrap-around


def from_bytes(head: TensorHead, raw: memoryview | bytes) -> np.ndarray:
    """The tensor held by `raw`, which has exactly `head.count` values' bytes (the transport checks the size)."""
    return _finite(head, _reshape(head, np.frombuffer(raw, dtype=head.dtype)))


def from_values(head: TensorHead, values: Any) -> np.ndarray:
    """The tensor held by `values`, a flat or nested list of numbers (None when the request sent none)."""
    if values is None:
        raise InvalidInput(f"input {head.name!r} has no data")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # out of range: refused below
            array = np.asarray(values, dtype=head.dtype)
    except (ValueError, TypeError, OverflowError):
        raise _does_not_fill(head) from None
    array = _reshape(head, array)
    if head.dtype.kind == "f" and np.isnan(array).any():  # JSON null becomes NaN; JSON has no NaN
        raise InvalidInput(f"input {head.name!r}: data holds null or NaN values")
    return _finite(head, array)


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


def rows_for(model: ServedModel, tensors: dict[str, np.ndarray]) -> list[Row]:
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
