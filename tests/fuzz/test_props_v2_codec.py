"""Property tests of the v2 codec: any body, JSON or binary, parses to a request or fails with a 4xx error."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from app.dataplane.tensors import DATATYPES
from app.errors import ServiceError
from app.transport.http.errors import status_code_for
from app.transport.http.v2_codec import parse_request

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from([2**63, -(2**63) - 1, 10**400, 1e308, -1e308, 5e-324, 65504.0, 70000.0])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=40,
)
SHAPES = st.lists(
    st.integers(-2, 6) | st.sampled_from([0, 2**31, 2**62, 2**63 - 1, 2**64, 10**30]), max_size=5
)
DATATYPE_NAMES = st.sampled_from([*DATATYPES, "BYTES", "fp32", "", "FP128"])


@st.composite
def numeric_data(draw: st.DrawFn, shape: list[int]) -> Any:
    """Data that often fits the shape: a flat or nested list of numbers of the right count, or nearly."""
    count = int(np.prod([max(dim, 0) for dim in shape])) if all(0 <= dim <= 8 for dim in shape) else 3
    count = max(0, count + draw(st.sampled_from([0, 0, 0, -1, 1])))
    numbers = st.integers(-300, 300) | st.floats() | st.sampled_from([1e39, -1e39, 2**64, True, None])
    flat = draw(st.lists(numbers, min_size=count, max_size=count))
    if draw(st.booleans()) and shape and all(1 <= dim <= 8 for dim in shape) and len(flat) == np.prod(shape):
        return np.asarray(flat, dtype=object).reshape(shape).tolist()
    return flat


@st.composite
def tensor_inputs(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(SHAPES)
    item: dict[str, Any] = {
        "name": draw(st.sampled_from(["pixel_values", "input_ids", "x"]) | st.text(max_size=5)),
        "shape": shape,
        "datatype": draw(DATATYPE_NAMES),
    }
    if draw(st.booleans()):
        item["data"] = draw(numeric_data(shape) | JSON_VALUES)
    if draw(st.integers(0, 3)) == 0:
        item["parameters"] = draw(
            st.dictionaries(st.sampled_from(["binary_data_size", "other"]), JSON_SCALARS)
        )
    return item


@st.composite
def json_requests(draw: st.DrawFn) -> bytes:
    document: dict[str, Any] = {"inputs": draw(st.lists(tensor_inputs(), max_size=3))}
    if draw(st.booleans()):
        document["id"] = draw(JSON_SCALARS)
    if draw(st.booleans()):
        document["outputs"] = draw(st.lists(st.fixed_dictionaries({"name": st.text(max_size=5)}), max_size=2))
    return json.dumps(document).encode()  # allow_nan: NaN and Infinity tokens, which JSON does not have


@st.composite
def binary_requests(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A JSON head whose tensors take their bytes from what follows, with sizes right, wrong or absurd."""
    inputs = []
    for _ in range(draw(st.integers(1, 3))):
        shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3) | SHAPES)
        datatype = draw(DATATYPE_NAMES)
        right = int(np.prod(shape, dtype=object)) * DATATYPES.get(datatype, np.dtype(np.uint8)).itemsize
        size = draw(
            st.sampled_from([right, right, right + 1, right - 1, -right, 0]) | st.integers() | JSON_SCALARS
        )
        inputs.append(
            {
                "name": f"t{len(inputs)}",
                "shape": shape,
                "datatype": datatype,
                "parameters": {"binary_data_size": size},
            }
        )
    head = json.dumps({"inputs": inputs}).encode()
    tail = draw(st.binary(max_size=256))
    length = draw(
        st.sampled_from([str(len(head))] * 4 + ["", "-1", "²", "٣", " 5", "1e3", str(len(head) + 10**6)])
    )
    return head + tail, length


def check_parsed(body: bytes, header_length: str | None) -> None:
    """The property: tensors of the declared dtype and shape with finite values, or a 4xx ServiceError."""
    try:
        request, tensors = parse_request(body, header_length)
    except ServiceError as exc:
        assert 400 <= status_code_for(exc) < 500 and exc.message, exc
        return
    assert request.inputs
    for item in request.inputs:
        array = tensors[item.name]
        assert array.dtype == DATATYPES[item.datatype]
        assert list(array.shape) == item.shape
        if array.dtype.kind == "f":
            assert np.isfinite(array).all(), array


@given(st.binary(max_size=512), st.none() | st.text(max_size=6))
@example(b'{"inputs":[]}', "\u00b2")
@example(b"", None)
def test_any_bytes_parse_or_fail_cleanly(body: bytes, header_length: str | None) -> None:
    check_parsed(body, header_length)


@given(json_requests())
@example(
    b'{"inputs":[{"name":"x","shape":[0],"datatype":"BOOL","data":[]},'
    b'{"name":"x","shape":[0],"datatype":"UINT8","data":[]}]}'
)
@example(b'{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[NaN,1]}]}')
@example(b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[Infinity]}]}')
@example(b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}]}')
@example(b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1e400]}]}')
@example(b'{"inputs":[{"name":"x","shape":[100000000000000000000000000000],"datatype":"FP32","data":[1]}]}')
@example(b'{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[100000000000000000000]}]}')
@example(b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":' + b"[" * 5000 + b"]" * 5000 + b"}]}")
def test_json_requests_parse_or_fail_cleanly(body: bytes) -> None:
    check_parsed(body, None)


@given(binary_requests())
@example(
    (
        b'{"inputs":[{"name":"x","shape":[4611686018427387904,4],"datatype":"FP32",'
        + b'"parameters":{"binary_data_size":0}}]}',
        "93",
    )
)
@example(
    (
        b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}'
        + np.float32("nan").tobytes(),
        "85",
    )
)
def test_binary_requests_parse_or_fail_cleanly(request: tuple[bytes, str | None]) -> None:
    check_parsed(*request)


@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=16), st.booleans())
def test_valid_tensors_round_trip(values: list[float], binary: bool) -> None:
    """A well-formed FP32 tensor comes back with exactly the values sent, as JSON data or as bytes."""
    sent = np.asarray(values, dtype=np.float32)
    item: dict[str, Any] = {"name": "x", "shape": [len(values)], "datatype": "FP32"}
    if binary:
        item["parameters"] = {"binary_data_size": sent.nbytes}
        head = json.dumps({"inputs": [item]}).encode()
        _, tensors = parse_request(head + sent.tobytes(), str(len(head)))
    else:
        item["data"] = values
        _, tensors = parse_request(json.dumps({"inputs": [item]}).encode(), None)
    np.testing.assert_array_equal(tensors["x"], sent)
