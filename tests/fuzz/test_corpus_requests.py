"""A hand-made corpus of malformed requests through the real server: bad JSON, odd text, huge numbers, deep
nesting, NaN/Inf and wrong-length v2 tensors. Each gets a clear 4xx JSON error (or a correct 200)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.serving.support import ModelUnderTest, ServerProcess, assert_json_error, assert_prediction

from .conftest import assert_healthy

JSON = {"Content-Type": "application/json"}
DEEP = 100_000

# /predict bodies sent as application/json, and the status each must get.
PREDICT_BODIES: dict[str, tuple[bytes, int]] = {
    "empty-body": (b"", 422),
    "not-utf8": (b'{"text": "caf\xe9 \xff\xfe"}', 422),
    "utf16": ('{"text": "fine"}'.encode("utf-16"), 422),
    "truncated": (b'{"text": "a fine fil', 422),
    "single-quotes": (b"{'text': 'fine'}", 422),
    "trailing-comma": (b'{"text": "fine",}', 422),
    "a-list": (b'["fine"]', 422),
    "a-number": (b"42", 422),
    "null": (b"null", 422),
    "no-input": (b'{"top_k": 2}', 422),
    "both-inputs": (b'{"text": "fine", "image": "aGk="}', 422),
    "nan-top-k": (b'{"text": "fine", "top_k": NaN}', 422),
    "huge-top-k": (b'{"text": "fine", "top_k": 1' + b"0" * 400 + b"}", 422),
    "float-overflow-top-k": (b'{"text": "fine", "top_k": 1e400}', 422),
    "negative-top-k": (b'{"text": "fine", "top_k": -1}', 422),
    "deep-list": (b'{"text": ' + b"[" * DEEP + b"]" * DEEP + b"}", 422),
    "deep-object": (b'{"text": "x", "extra": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}", 422),
    "text-is-number": (b'{"text": 12}', 422),
    "blank-text": (b'{"text": " \\t\\n "}', 422),
    "lone-surrogate": (b'{"text": "\\udc00 fine"}', 422),
    "empty-list": (b'{"text": []}', 422),
    "too-many-texts": (json.dumps({"text": ["fine"] * 65}).encode(), 422),
    "bad-base64": (b'{"image": "not base64!"}', 400),
    "base64-of-text": (b'{"image": "aGVsbG8gd29ybGQ="}', 400),
    "unknown-model": (b'{"text": "fine", "model": "nope"}', 404),
    "text-to-image-model": (b'{"text": "fine", "model": "mnist-cnn"}', 400),
}

# Texts that must be answered like the model answers them run directly.
ODD_TEXTS = [
    "\u200b",
    "\x00",
    "😀" * 50,
    "İ" * 300,
    "\u0301" * 100,
    "a" * 20_000,
    "ﷺ" * 64,
    "\ufeffbom",
    "\r\n\t.",
]


@pytest.mark.parametrize("name", sorted(PREDICT_BODIES))
def test_malformed_predict_bodies(name: str, fuzz_http: httpx.Client) -> None:
    body, status = PREDICT_BODIES[name]
    assert_json_error(fuzz_http.post("/predict", content=body, headers=JSON), status)


@pytest.mark.parametrize("text", ODD_TEXTS, ids=range(len(ODD_TEXTS)))
def test_odd_texts_are_answered(text: str, fuzz_http: httpx.Client, text_model: ModelUnderTest) -> None:
    response = fuzz_http.post("/predict", json={"text": text})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), text_model.text_probabilities(text), text_model.labels, 2)


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("", 415),
        ("text/plain", 415),
        ("application/xml", 415),
        ("multipart/form-data", 422),
        ("multipart/form-data; boundary=xyz", 422),
        ("application/json; charset=utf-8", 200),
    ],
)
def test_content_types(content_type: str, status: int, fuzz_http: httpx.Client) -> None:
    response = fuzz_http.post("/predict", content=b'{"text": "fine"}', headers={"Content-Type": content_type})
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert_json_error(response, status)


def test_multipart_edge_cases(fuzz_http: httpx.Client) -> None:
    assert_json_error(
        fuzz_http.post("/predict", data={"model": "mnist-cnn"}, files={"other": ("x", b"")}), 422
    )
    assert_json_error(fuzz_http.post("/predict", files={"file": ("empty.png", b"")}), 400)
    too_many = [("file", (f"{i}.png", b"x")) for i in range(65)]
    assert_json_error(fuzz_http.post("/predict", files=too_many), 422)


@pytest.mark.parametrize("top_k", ["\u00b2", "\u0663"])
def test_unicode_digit_top_k_is_422(top_k: str, fuzz_http: httpx.Client) -> None:
    response = fuzz_http.post("/predict", params={"top_k": top_k}, json={"text": "fine"})
    assert_json_error(response, 422)


# v2 ---------------------------------------------------------------------------------------------------


def _pixels_input(data: object, shape: list[int] | None = None, datatype: str = "FP32") -> dict[str, object]:
    return {
        "inputs": [
            {"name": "pixel_values", "shape": shape or [1, 1, 28, 28], "datatype": datatype, "data": data}
        ]
    }


V2_JSON: dict[str, bytes] = {
    "nan-token": json.dumps(_pixels_input([float("nan")] * 784)).encode(),
    "infinity-token": json.dumps(_pixels_input([float("inf")] + [0.0] * 783)).encode(),
    "minus-infinity-token": json.dumps(_pixels_input([float("-inf")] + [0.0] * 783)).encode(),
    "fp32-overflow": json.dumps(_pixels_input([1e39] + [0.0] * 783)).encode(),
    "fp64-overflow-literal": json.dumps(_pixels_input(["HUGE"] + [0.0] * 783))
    .encode()
    .replace(b'"HUGE"', b"1e400"),
    "one-value-short": json.dumps(_pixels_input([0.0] * 783)).encode(),
    "one-value-long": json.dumps(_pixels_input([0.0] * 785)).encode(),
    "ragged": json.dumps(_pixels_input([[0.0] * 28] * 27 + [[0.0] * 27])).encode(),
    "shape-too-large": json.dumps(_pixels_input([0.0], [10**30])).encode(),
    "shape-int64-wrap": json.dumps(_pixels_input([0.0], [2**62, 4])).encode(),
    "negative-shape": json.dumps(_pixels_input([0.0], [-1, 1, 28, 28])).encode(),
    "wrong-datatype": json.dumps(_pixels_input([0] * 784, datatype="INT64")).encode(),
    "unknown-datatype": json.dumps(_pixels_input([0] * 784, datatype="FP128")).encode(),
    "wrong-input-name": json.dumps(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
    ).encode(),
    "strings-as-data": json.dumps(_pixels_input(["a"] * 784)).encode(),
    "deep-data": json.dumps(_pixels_input(0))
    .encode()
    .replace(b'"data": 0', b'"data": ' + b"[" * DEEP + b"]" * DEEP),
    "no-inputs": b'{"inputs": []}',
    "not-json": b"\xff\xfe\x00",
}


@pytest.mark.parametrize("name", sorted(V2_JSON))
def test_malformed_v2_json(name: str, fuzz_http: httpx.Client) -> None:
    response = fuzz_http.post("/v2/models/mnist-cnn/infer", content=V2_JSON[name], headers=JSON)
    assert_json_error(response, response.status_code)
    assert response.status_code in (400, 422), response.text


def _binary(head: dict[str, object], tail: bytes, length: str | None = None) -> tuple[bytes, dict[str, str]]:
    encoded = json.dumps(head).encode()
    return encoded + tail, {
        "Inference-Header-Content-Length": length or str(len(encoded)),
        "Content-Type": "application/octet-stream",
    }


def _binary_pixels(values: np.ndarray, size: int | None = None) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "pixel_values",
                "shape": [1, 1, 28, 28],
                "datatype": "FP32",
                "parameters": {"binary_data_size": values.nbytes if size is None else size},
            }
        ]
    }


ZEROS = np.zeros(784, np.float32)
NAN = np.full(784, np.nan, np.float32)
V2_BINARY = {
    "nan-bytes": _binary(_binary_pixels(NAN), NAN.tobytes()),
    "inf-bytes": _binary(_binary_pixels(ZEROS + np.inf), (ZEROS + np.inf).tobytes()),
    "short-bytes": _binary(_binary_pixels(ZEROS), ZEROS.tobytes()[:-4]),
    "size-mismatch": _binary(_binary_pixels(ZEROS, 100), ZEROS.tobytes()),
    "header-length-too-long": _binary(_binary_pixels(ZEROS), ZEROS.tobytes(), "999999"),
    "header-length-not-a-number": _binary(_binary_pixels(ZEROS), ZEROS.tobytes(), "12a"),
    "header-length-unicode-digit": _binary(_binary_pixels(ZEROS), ZEROS.tobytes(), "\u00b2"),
    "header-cut-mid-json": _binary(_binary_pixels(ZEROS), ZEROS.tobytes(), "20"),
}


@pytest.mark.parametrize("name", sorted(V2_BINARY))
def test_malformed_v2_binary(name: str, fuzz_server: ServerProcess) -> None:
    body, headers = V2_BINARY[name]
    # A raw request, so the latin-1 header byte of "²" goes out as it is.
    with fuzz_server.client() as client:
        response = client.post(
            "/v2/models/mnist-cnn/infer",
            content=body,
            headers={key: value.encode("latin-1") for key, value in headers.items()},
        )
    assert_json_error(response, response.status_code)
    assert response.status_code in (400, 422), response.text


def test_text_model_v2_bad_tokens(fuzz_http: httpx.Client) -> None:
    def ids(values: list[int], mask: list[int] | None = None) -> dict[str, object]:
        mask = [1] * len(values) if mask is None else mask
        return {
            "inputs": [
                {"name": "input_ids", "shape": [1, len(values)], "datatype": "INT64", "data": values},
                {"name": "attention_mask", "shape": [1, len(mask)], "datatype": "INT64", "data": mask},
            ]
        }

    for body in (ids([2, 10**6, 3]), ids([2, -1, 3]), ids([2, 3], [1, 1, 1]), ids([2, 2**63, 3]), ids([])):
        response = fuzz_http.post("/v2/models/sst2-textcnn/infer", json=body)
        assert_json_error(response, response.status_code)
        assert response.status_code in (400, 422), response.text


def test_server_healthy_after_the_corpus(fuzz_server: ServerProcess) -> None:
    assert_healthy(fuzz_server)
