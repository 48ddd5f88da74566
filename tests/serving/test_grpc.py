"""The Open Inference Protocol v2 over gRPC, through the real, unchanged `tritonclient.grpc` package (and its
generated stubs where a test needs what the client does not send: typed contents, trailing metadata).

Answers are compared with REST's (`tritonclient.http` against the same server) and with a plain ONNX Runtime
session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from .conftest import MAX_BODY_BYTES, MAX_ITEMS
from .support import SCORE_TOLERANCE, ModelUnderTest, ServerProcess, has_series, scrape, value

INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> Iterator[triton_grpc.InferenceServerClient]:
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def rest_client(server: ServerProcess) -> Iterator[triton_http.InferenceServerClient]:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=60.0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_input(name: str, array: np.ndarray, datatype: str) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def http_input(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> triton_http.InferInput:
    tensor = triton_http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def softmax(logits: np.ndarray) -> np.ndarray:
    scores = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    return scores / scores.sum(axis=1, keepdims=True)


def status_of(caught: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(caught.value.status()).removeprefix("StatusCode.")


# Health and metadata -----------------------------------------------------------------------------------


def test_health_and_metadata_are_rests(grpc_client: triton_grpc.InferenceServerClient,
                                       rest_client: triton_http.InferenceServerClient,
                                       image_model: ModelUnderTest, text_model: ModelUnderTest) -> None:
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    for model in (image_model, text_model):
        assert grpc_client.is_model_ready(model.name)
        assert grpc_client.is_model_ready(model.name, model_version=str(model.config.version))
        metadata = grpc_client.get_model_metadata(model.name, as_json=True)
        for tensor in metadata["inputs"] + metadata["outputs"]:  # protobuf's JSON writes int64 as strings
            tensor["shape"] = [int(dim) for dim in tensor["shape"]]
        assert metadata == rest_client.get_model_metadata(model.name)
        config = grpc_client.get_model_config(model.name, as_json=True)["config"]
        rest_config = rest_client.get_model_config(model.name)
        assert config["max_batch_size"] == rest_config["max_batch_size"]
        for side in ("input", "output"):
            assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config[side]] == [
                (t["name"], t["data_type"], t["dims"]) for t in rest_config[side]]
        assert config["parameters"]["labels"]["string_value"] == ",".join(model.labels)
    assert grpc_client.get_server_metadata(as_json=True) == rest_client.get_server_metadata()
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.is_model_ready("does-not-exist")
    assert status_of(caught) == "NOT_FOUND"


@pytest.mark.parametrize(("service", "status"), [
    ("", "SERVING"), ("inference.GRPCInferenceService", "SERVING"), ("live", "SERVING"), ("mnist-cnn", "SERVING"),
])
def test_grpc_health_checking(server: ServerProcess, service: str, status: str) -> None:
    """grpc.health.v1, as Kubernetes' gRPC probes call it."""
    with grpc.insecure_channel(server.grpc_url) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status) == status


def test_an_unknown_health_service_is_not_found(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel, pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("call", ["get_inference_statistics", "get_model_repository_index",
                                  "get_system_shared_memory_status", "get_log_settings"])
def test_rpcs_not_served_are_unimplemented(grpc_client: triton_grpc.InferenceServerClient, call: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        getattr(grpc_client, call)()
    assert status_of(caught) == "UNIMPLEMENTED"
    assert "not served" in caught.value.message() and "Error" not in caught.value.message()
    assert grpc_client.is_server_live()


def test_streaming_rpcs_not_served_are_unimplemented(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        with pytest.raises(grpc.RpcError) as streamed:
            list(stream(iter([service_pb2.ModelInferRequest().SerializeToString()]), timeout=10))
        with pytest.raises(grpc.RpcError) as watched:
            list(health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10))
    for caught in (streamed, watched):
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "not served" in str(caught.value.details())


# Inference ---------------------------------------------------------------------------------------------


def test_digits_over_grpc_are_rests_answers(grpc_client: triton_grpc.InferenceServerClient,
                                            rest_client: triton_http.InferenceServerClient,
                                            image_model: ModelUnderTest, digits: list[bytes]) -> None:
    """Raw input and output tensors (tritonclient.grpc's `raw_input_contents`), and the request id echoed."""
    pixels = np.stack([image_model.image_tensor(digit) for digit in digits[:7]])
    name, output = image_model.config.inputs[0].name, image_model.config.outputs[0].name

    result = grpc_client.infer(image_model.name, [grpc_input(name, pixels, "FP32")], request_id="digits-7")

    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (
        image_model.name, str(image_model.config.version), "digits-7")
    got = result.as_numpy(output)
    expected = image_model.run({name: pixels})
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)
    rest = rest_client.infer(image_model.name, [http_input(name, pixels, "FP32")]).as_numpy(output)
    np.testing.assert_allclose(got, rest, rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)


def test_typed_contents_answer_as_raw_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub,
                                               image_model: ModelUnderTest, digits: list[bytes]) -> None:
    pixels = np.stack([image_model.image_tensor(digit) for digit in digits[7:10]])
    name = image_model.config.inputs[0].name
    request = service_pb2.ModelInferRequest(model_name=image_model.name)
    request.inputs.add(name=name, datatype="FP32", shape=pixels.shape).contents.fp32_contents.extend(pixels.ravel())

    response = stub.ModelInfer(request, timeout=30)

    (output,) = response.outputs
    got = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(output.shape)
    np.testing.assert_allclose(got, image_model.run({name: pixels}), rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)


@pytest.mark.parametrize("shape", ["[n]", "[n, 1]"])
def test_texts_as_bytes_are_answered_as_tokens_are(grpc_client: triton_grpc.InferenceServerClient,
                                                    rest_client: triton_http.InferenceServerClient,
                                                    text_model: ModelUnderTest, reviews: list[str],
                                                    shape: str) -> None:
    """A text model takes its texts as one BYTES input `text`, tokenized by the server; the logits are those of
    the tokens sent as INT64 tensors, over gRPC and REST (binary and JSON)."""
    texts = reviews[:6]
    strings = np.array([text.encode() for text in texts], dtype=object)
    if shape == "[n, 1]":
        strings = strings[:, None]
    output = text_model.config.outputs[0].name

    by_grpc = grpc_client.infer(text_model.name, [grpc_input("text", strings, "BYTES")]).as_numpy(output)

    expected = np.stack([text_model.run(text_model.text_feeds([text]))[0] for text in texts])
    np.testing.assert_allclose(by_grpc, expected, rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)
    for binary in (True, False):
        by_rest = rest_client.infer(text_model.name, [http_input("text", strings, "BYTES", binary)]).as_numpy(output)
        np.testing.assert_allclose(by_grpc, by_rest, rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)
    feeds = text_model.text_feeds(texts)
    tokens = grpc_client.infer(text_model.name, [grpc_input(key, feeds[key], "INT64") for key in sorted(feeds)])
    np.testing.assert_allclose(tokens.as_numpy(output), text_model.run(feeds), rtol=SCORE_TOLERANCE,
                               atol=SCORE_TOLERANCE)


def test_encoded_digits_as_bytes_are_preprocessed_as_predicts(grpc_client: triton_grpc.InferenceServerClient,
                                                               image_model: ModelUnderTest,
                                                               digits: list[bytes]) -> None:
    images = np.array(digits[:4], dtype=object)
    result = grpc_client.infer(image_model.name, [grpc_input("image", images, "BYTES")])
    logits = result.as_numpy(image_model.config.outputs[0].name)
    for row, digit in zip(softmax(logits), digits[:4], strict=True):
        np.testing.assert_allclose(row, image_model.image_probabilities(digit), atol=SCORE_TOLERANCE)


# Refusals ----------------------------------------------------------------------------------------------


def _cases(image_model: ModelUnderTest, text_model: ModelUnderTest) -> dict[str, tuple[str, list[Any], str]]:
    """Each bad request: the model it names, its inputs, and the status it gets."""
    spec = image_model.config.inputs[0]
    pixels = np.zeros([1, *spec.shape[1:]], dtype=np.float32)
    nan = pixels.copy()
    nan[0, 0, 0, 0] = np.nan
    return {
        "unknown model": ("does-not-exist", [grpc_input(spec.name, pixels, "FP32")], "NOT_FOUND"),
        "wrong input name": (image_model.name, [grpc_input("not_the_input", pixels, "FP32")], "INVALID_ARGUMENT"),
        "wrong shape": (image_model.name, [grpc_input(spec.name, np.zeros([1, 3, 5], np.float32), "FP32")],
                        "INVALID_ARGUMENT"),
        "wrong datatype": (image_model.name, [grpc_input(spec.name, pixels.astype(np.int64), "INT64")],
                           "INVALID_ARGUMENT"),
        "NaN": (image_model.name, [grpc_input(spec.name, nan, "FP32")], "INVALID_ARGUMENT"),
        "an image to a text model": (text_model.name, [grpc_input("image", np.array([b"x"], dtype=object), "BYTES")],
                                     "INVALID_ARGUMENT"),
        "too many texts": (text_model.name,
                           [grpc_input("text", np.array([b"fine"] * (MAX_ITEMS + 1), dtype=object), "BYTES")],
                           "INVALID_ARGUMENT"),
        "an empty text": (text_model.name, [grpc_input("text", np.array([b"  "], dtype=object), "BYTES")],
                          "INVALID_ARGUMENT"),
        "not UTF-8": (text_model.name, [grpc_input("text", np.array([b"\xff\xfe"], dtype=object), "BYTES")],
                      "INVALID_ARGUMENT"),
        "not an image": (image_model.name, [grpc_input("image", np.array([b"not an image"], dtype=object), "BYTES")],
                         "INVALID_ARGUMENT"),
    }


CASES = ["unknown model", "wrong input name", "wrong shape", "wrong datatype", "NaN",
         "an image to a text model", "too many texts", "an empty text", "not UTF-8", "not an image"]


@pytest.mark.parametrize("case", CASES)
def test_bad_requests_get_their_status(grpc_client: triton_grpc.InferenceServerClient, image_model: ModelUnderTest,
                                       text_model: ModelUnderTest, case: str) -> None:
    model, inputs, status = _cases(image_model, text_model)[case]
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.infer(model, inputs)
    assert status_of(caught) == status, caught.value.message()
    assert "Traceback" not in str(caught.value.message()) and ".py" not in str(caught.value.message())
    assert grpc_client.is_server_live()


def _raw_request(model: ModelUnderTest, datatype: str, raw: bytes, shape: list[int]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model.name)
    request.inputs.add(name=model.config.inputs[0].name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


def test_raw_contents_of_the_wrong_size_or_type_are_invalid(stub: service_pb2_grpc.GRPCInferenceServiceStub,
                                                            image_model: ModelUnderTest) -> None:
    shape = [1, *image_model.config.inputs[0].shape[1:]]
    short = _raw_request(image_model, "FP32", b"\0" * 12, shape)
    unknown = _raw_request(image_model, "FP33", b"\0" * 4, [1])
    negative = _raw_request(image_model, "FP32", b"\0" * 4, [-1, 1])
    one_raw_for_two = _raw_request(image_model, "FP32", b"\0" * 4, [1])
    one_raw_for_two.inputs.add(name="second", datatype="FP32", shape=[1])
    typed_fp16 = service_pb2.ModelInferRequest(model_name=image_model.name)
    typed_fp16.inputs.add(name=image_model.config.inputs[0].name, datatype="FP16", shape=[1]).contents.fp32_contents.append(1)
    both = _raw_request(image_model, "FP32", b"\0" * 4, [1])
    both.inputs[0].contents.fp32_contents.append(1)
    for request in (short, unknown, negative, one_raw_for_two, typed_fp16, both):
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()


def test_a_message_over_the_body_limit_is_resource_exhausted(stub: service_pb2_grpc.GRPCInferenceServiceStub,
                                                             image_model: ModelUnderTest) -> None:
    """SERVE_MAX_BODY_BYTES bounds gRPC messages too."""
    request = _raw_request(image_model, "FP32", b"\0" * (MAX_BODY_BYTES + 4), [1, (MAX_BODY_BYTES + 4) // 4])
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live


# What every RPC carries ----------------------------------------------------------------------------------


def test_request_ids_come_back_in_the_trailing_metadata(stub: service_pb2_grpc.GRPCInferenceServiceStub,
                                                        image_model: ModelUnderTest) -> None:
    _, call = stub.ServerLive.with_call(service_pb2.ServerLiveRequest(), timeout=10,
                                        metadata=(("x-request-id", "trace-me-42"),))
    assert dict(call.trailing_metadata())["x-request-id"] == "trace-me-42"
    _, call = stub.ServerLive.with_call(service_pb2.ServerLiveRequest(), timeout=10,
                                        metadata=(("x-request-id", "no spaces allowed"),))
    made = dict(call.trailing_metadata())["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(_raw_request(image_model, "FP32", b"", [0]), timeout=10,
                        metadata=(("x-request-id", "bad-one-7"),))
    trailers = dict(caught.value.trailing_metadata())
    assert trailers["x-request-id"] == "bad-one-7"
    assert trailers["x-error-code"] == "invalid_input"


def test_grpc_requests_are_counted_with_their_protocol(server: ServerProcess,
                                                       grpc_client: triton_grpc.InferenceServerClient,
                                                       image_model: ModelUnderTest) -> None:
    labels = {"protocol": "grpc", "route": INFER, "model": image_model.name}
    pixels = np.zeros([2, *image_model.config.inputs[0].shape[1:]], dtype=np.float32)
    with server.client() as http:
        before = scrape(http)
        for _ in range(3):
            grpc_client.infer(image_model.name, [grpc_input(image_model.config.inputs[0].name, pixels, "FP32")])
        with pytest.raises(InferenceServerException):
            grpc_client.infer(image_model.name, [grpc_input("wrong", pixels, "FP32")])
        after = scrape(http)
    assert value(after, "modelserver_requests_total", **labels, status="OK") - value(
        before, "modelserver_requests_total", **labels, status="OK") == 3
    assert value(after, "modelserver_requests_total", **labels, status="INVALID_ARGUMENT") - value(
        before, "modelserver_requests_total", **labels, status="INVALID_ARGUMENT") == 1
    assert has_series(after, "modelserver_request_duration_seconds_bucket", **labels)
    assert value(after, "modelserver_errors_total", model=image_model.name, kind="invalid_input") > value(
        before, "modelserver_errors_total", model=image_model.name, kind="invalid_input")
