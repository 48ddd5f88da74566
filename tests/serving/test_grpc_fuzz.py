"""The gRPC surface under malformed input: bytes that are no protobuf, valid requests with bytes flipped, cut or
inserted, and well-formed requests of random names, datatypes, shapes and contents. Every one gets an error
status (never UNKNOWN or INTERNAL, never a hang), and the server answers correctly afterwards."""

from __future__ import annotations

import random
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .support import SCORE_TOLERANCE, ModelUnderTest, ServerProcess

SERVICE = "/inference.GRPCInferenceService/"
SERVED = ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig", "ModelInfer",
          "RepositoryModelLoad", "RepositoryModelUnload"]
# Bytes no protobuf parser takes: a tag whose varint never ends, and a length-delimited field cut short.
NOT_PROTOBUF = [b"\xff" * 11, b"\x0a\x05ab", b"\x12"]
# Server errors: what no input may cause.
BROKEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED,
          grpc.StatusCode.UNAVAILABLE}
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
             "BYTES", "", "fp32", "STRING", "BF16"]
CASES = 300


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_url) as opened:
        yield opened


def send(channel: grpc.Channel, method: str, data: bytes) -> grpc.StatusCode:
    """The status of one call of `method` with `data` as its request message."""
    call = channel.unary_unary(SERVICE + method)  # no serializers: the bytes go as they are
    try:
        call(data, timeout=20)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def assert_still_answers(channel: grpc.Channel, model: ModelUnderTest) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    pixels = np.random.default_rng(0).random([1, *model.config.inputs[0].shape[1:]], dtype=np.float32)
    request = service_pb2.ModelInferRequest(model_name=model.name)
    request.inputs.add(name=model.config.inputs[0].name, datatype="FP32", shape=pixels.shape)
    request.raw_input_contents.append(pixels.tobytes())
    response = stub.ModelInfer(request, timeout=20)
    got = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(response.outputs[0].shape)
    np.testing.assert_allclose(got, model.run({model.config.inputs[0].name: pixels}), rtol=SCORE_TOLERANCE,
                               atol=SCORE_TOLERANCE)


@pytest.mark.parametrize("method", SERVED)
def test_bytes_that_are_no_protobuf_are_invalid_argument(channel: grpc.Channel, image_model: ModelUnderTest,
                                                         method: str) -> None:
    for data in NOT_PROTOBUF:
        assert send(channel, method, data) == grpc.StatusCode.INVALID_ARGUMENT, data
    assert_still_answers(channel, image_model)


def _valid_requests(image_model: ModelUnderTest, text_model: ModelUnderTest) -> list[bytes]:
    pixels = service_pb2.ModelInferRequest(model_name=image_model.name, id="fuzz")
    pixels.inputs.add(name=image_model.config.inputs[0].name, datatype="FP32", shape=[1, 1, 28, 28])
    pixels.raw_input_contents.append(np.zeros(28 * 28, np.float32).tobytes())
    texts = service_pb2.ModelInferRequest(model_name=text_model.name)
    texts.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"Good.", b"Bad."])
    texts.outputs.add(name=text_model.config.outputs[0].name)
    return [pixels.SerializeToString(), texts.SerializeToString()]


def _mutated(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(4)
        at = rng.randrange(len(data))
        if kind == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[at] = rng.randrange(256)
        elif kind == 2:
            del data[at:at + rng.randint(1, 8)]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        if not data:
            break
    return bytes(data)


def test_valid_requests_with_bytes_flipped_cut_or_inserted(channel: grpc.Channel, image_model: ModelUnderTest,
                                                           text_model: ModelUnderTest) -> None:
    rng = random.Random(23)
    valid = _valid_requests(image_model, text_model)
    broken = []
    for case in range(CASES):
        data = _mutated(rng, valid[case % len(valid)])
        status = send(channel, "ModelInfer", data)
        if status in BROKEN:
            broken.append((status, data[:80]))
    assert not broken, broken[:5]
    assert_still_answers(channel, image_model)


def _random_request(rng: random.Random, models: list[ModelUnderTest]) -> service_pb2.ModelInferRequest:
    model = rng.choice(models)
    request = service_pb2.ModelInferRequest(model_name=rng.choice([model.name, model.name, "", "nope", "../x"]))
    raw = rng.random() < 0.5
    names = [spec.name for spec in model.config.inputs] + ["text", "image", "", "x" * 300]
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        shape = [rng.choice([0, 1, 2, 3, 28, -1, -(2**40), 2**31, 2**62]) for _ in range(rng.choice([0, 1, 2, 4, 70]))]
        tensor = request.inputs.add(name=rng.choice(names), datatype=rng.choice(DATATYPES), shape=shape)
        if raw:
            request.raw_input_contents.append(rng.randbytes(rng.choice([0, 1, 4, 7, 3136, 6272, 20000])))
        else:
            count = rng.choice([0, 1, 5, 784])
            field = rng.choice(["fp32_contents", "int64_contents", "bytes_contents", "bool_contents",
                                "uint_contents", "int_contents", "fp64_contents", "uint64_contents"])
            values = {
                "fp32_contents": lambda: rng.choice([0.5, float("nan"), float("inf"), -3e38]),
                "fp64_contents": lambda: rng.choice([0.5, float("nan"), 1e308]),
                "bytes_contents": lambda: rng.randbytes(rng.choice([0, 3, 40])),
                "bool_contents": lambda: rng.random() < 0.5,
                "int64_contents": lambda: rng.choice([0, -1, 2**62, 30521]),
                "uint64_contents": lambda: rng.choice([0, 2**63]),
                "uint_contents": lambda: rng.choice([0, 255, 2**31]),
                "int_contents": lambda: rng.choice([0, -(2**31), 127]),
            }[field]
            getattr(tensor.contents, field).extend(values() for _ in range(count))
    if rng.random() < 0.2:
        request.raw_input_contents.append(b"\0" * 4)  # one too many
    if rng.random() < 0.3:
        request.outputs.add(name=rng.choice([model.config.outputs[0].name, "nope"]))
    return request


def test_requests_of_random_names_datatypes_shapes_and_contents(channel: grpc.Channel, image_model: ModelUnderTest,
                                                                text_model: ModelUnderTest) -> None:
    rng = random.Random(5)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    broken = []
    for _ in range(CASES):
        request = _random_request(rng, [image_model, text_model])
        try:
            stub.ModelInfer(request, timeout=20)
        except grpc.RpcError as exc:
            if exc.code() in BROKEN:
                broken.append((exc.code(), exc.details(), str(request)[:300]))
    assert not broken, broken[:5]
    assert_still_answers(channel, image_model)
