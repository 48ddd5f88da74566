"""The Open Inference Protocol v2 through the real, unchanged `tritonclient.http` package."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from .support import SCORE_TOLERANCE, ModelUnderTest, ServerProcess, assert_json_error

DATATYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=60.0)
    yield client
    client.close()


def _tensor_metadata(specs: list[Any]) -> list[dict[str, Any]]:
    return [{"name": spec.name, "datatype": DATATYPES[spec.dtype],
             "shape": [dim if isinstance(dim, int) else -1 for dim in spec.shape]} for spec in specs]


def _input(name: str, array: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), DATATYPES[str(array.dtype)])
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_health_and_readiness(client: triton.InferenceServerClient, image_model: ModelUnderTest,
                              text_model: ModelUnderTest) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(image_model.name)
    assert client.is_model_ready(text_model.name)
    assert client.is_model_ready(image_model.name, model_version=str(image_model.config.version))
    assert not client.is_model_ready("does-not-exist")
    assert client.get_server_metadata()["name"]


@pytest.mark.parametrize("model_fixture", ["image_model", "text_model"])
def test_model_metadata(client: triton.InferenceServerClient, request: pytest.FixtureRequest,
                        model_fixture: str) -> None:
    model: ModelUnderTest = request.getfixturevalue(model_fixture)
    metadata = client.get_model_metadata(model.name)
    assert metadata["name"] == model.name
    assert metadata["versions"] == [str(model.config.version)]
    assert metadata["inputs"] == _tensor_metadata(model.config.inputs)
    assert metadata["outputs"] == _tensor_metadata(model.config.outputs)
    assert client.get_model_metadata(model.name, model_version=str(model.config.version)) == metadata
    config = client.get_model_config(model.name)
    assert config["name"] == model.name and config["max_batch_size"] >= 1
    assert [item["name"] for item in config["input"]] == [spec.name for spec in model.config.inputs]


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False, None], ids=["binary-out", "json-out", "default-out"])
def test_image_infer(client: triton.InferenceServerClient, image_model: ModelUnderTest, digits: list[bytes],
                     binary_in: bool, binary_out: bool | None) -> None:
    pixels = np.stack([image_model.image_tensor(digit) for digit in digits[:7]])
    input_name = image_model.config.inputs[0].name
    output_name = image_model.config.outputs[0].name
    outputs = None if binary_out is None else [triton.InferRequestedOutput(output_name, binary_data=binary_out)]

    result = client.infer(image_model.name, [_input(input_name, pixels, binary_in)], outputs=outputs,
                          request_id="digits-1")

    response = result.get_response()
    assert response["model_name"] == image_model.name
    assert response["model_version"] == str(image_model.config.version)
    assert response["id"] == "digits-1"
    (output,) = response["outputs"]
    assert ("data" in output) == (binary_out is False), output.keys()
    expected = image_model.run({input_name: pixels})
    got = result.as_numpy(output_name)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_text_infer(client: triton.InferenceServerClient, text_model: ModelUnderTest, reviews: list[str],
                    binary: bool) -> None:
    feeds = text_model.text_feeds(reviews[:5])
    inputs = [_input(name, feeds[name], binary) for name in sorted(feeds)]
    output_name = text_model.config.outputs[0].name

    result = client.infer(text_model.name, inputs,
                          outputs=[triton.InferRequestedOutput(output_name, binary_data=binary)])

    np.testing.assert_allclose(result.as_numpy(output_name), text_model.run(feeds),
                               rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)


def test_versioned_infer(client: triton.InferenceServerClient, image_model: ModelUnderTest,
                         digits: list[bytes]) -> None:
    pixels = image_model.image_tensor(digits[3])[None]
    input_name = image_model.config.inputs[0].name
    result = client.infer(image_model.name, [_input(input_name, pixels, True)],
                          model_version=str(image_model.config.version))
    np.testing.assert_allclose(result.as_numpy(image_model.config.outputs[0].name),
                               image_model.run({input_name: pixels}), rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)


def test_wrong_input_name_is_a_400(client: triton.InferenceServerClient, image_model: ModelUnderTest) -> None:
    pixels = np.zeros([1, *image_model.config.inputs[0].shape[1:]], dtype=np.float32)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(image_model.name, [_input("not_the_input", pixels, True)])
    assert caught.value.status() == "400"
    assert "not_the_input" in caught.value.message()


def test_wrong_shape_and_unknown_model(client: triton.InferenceServerClient, image_model: ModelUnderTest) -> None:
    input_name = image_model.config.inputs[0].name
    with pytest.raises(InferenceServerException) as caught:
        client.infer(image_model.name, [_input(input_name, np.zeros([1, 3, 5], dtype=np.float32), False)])
    assert caught.value.status() == "400"
    with pytest.raises(InferenceServerException) as caught:
        client.infer("does-not-exist", [_input(input_name, np.zeros([1, 1], dtype=np.float32), False)])
    assert caught.value.status() == "404"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata(image_model.name, model_version="999")
    assert caught.value.status() == "404"


def test_batch_larger_than_max_batch_size(client: triton.InferenceServerClient, image_model: ModelUnderTest,
                                          digits: list[bytes]) -> None:
    """A request with more rows than the model's max_batch_size is split, and answered whole and in order."""
    rows = image_model.config.max_batch_size * 2 + 3
    pixels = np.stack([image_model.image_tensor(digit) for digit in digits[:rows]])
    input_name = image_model.config.inputs[0].name
    result = client.infer(image_model.name, [_input(input_name, pixels, True)])
    np.testing.assert_allclose(result.as_numpy(image_model.config.outputs[0].name),
                               image_model.run({input_name: pixels}), rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)


def test_null_in_json_data_is_400(server: ServerProcess, image_model: ModelUnderTest) -> None:
    """`null` is not an FP32 value: it is refused, not turned into NaN and answered with non-JSON `NaN`."""
    spec = image_model.config.inputs[0]
    shape = [1, *spec.shape[1:]]
    count = int(np.prod(shape[1:]))
    body = {"inputs": [{"name": spec.name, "shape": shape, "datatype": "FP32", "data": [None] * count}]}
    with server.client() as http:
        response = http.post(f"/v2/models/{image_model.name}/infer", json=body)
    assert_json_error(response, 400, "invalid_input")
