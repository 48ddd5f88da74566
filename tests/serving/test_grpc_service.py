"""gRPC is the same service as REST, not a second one: the same batches, keys, deadlines, queue limits, drain on
SIGTERM and models (the photo model, an FP16 one), through `tritonclient.grpc` and its generated stubs."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from model_repository import file_sha256, save_config

from .conftest import MODELS_DIR, CopyModels, StartServer
from .support import (
    SCORE_TOLERANCE,
    ModelUnderTest,
    ServerProcess,
    batches_larger_than_one,
    edit_config,
    exit_status,
    scrape,
    value,
)

HOLD_MS = 1500  # the batcher holds a lone request this long for batch-mates
QUEUE = 2


def status_of(caught: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(caught.value.status()).removeprefix("StatusCode.")


def pixels_request(model: ModelUnderTest, pixels: np.ndarray) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model.name)
    request.inputs.add(name=model.config.inputs[0].name, datatype="FP32", shape=pixels.shape)
    request.raw_input_contents.append(pixels.astype(np.float32).tobytes())
    return request


def logits_of(response: service_pb2.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(response.outputs[0].shape)


# One model queue for REST and gRPC -------------------------------------------------------------------


@pytest.fixture(scope="module")
def holding(tmp_path_factory: pytest.TempPathFactory, image_model: ModelUnderTest) -> Iterator[ServerProcess]:
    """A lone request waits HOLD_MS for batch-mates; the queue holds QUEUE requests."""
    server = ServerProcess(MODELS_DIR, tmp_path_factory.mktemp("holding"), grpc=True, env={
        "SERVE_MODELS": image_model.name, "SERVE_MAX_BATCH_WAIT_MS": str(HOLD_MS),
        "SERVE_BATCH_SIZE_SEARCH": "false", "SERVE_MAX_QUEUE_SIZE": str(QUEUE), "SERVE_REQUEST_TIMEOUT_S": "10"})
    server.start().wait_ready()
    yield server
    server.stop()


def test_a_grpc_and_a_rest_request_share_one_batch(holding: ServerProcess, image_model: ModelUnderTest,
                                                   digits: list[bytes]) -> None:
    pixels = np.stack([image_model.image_tensor(digit) for digit in digits[:2]])
    spec = image_model.config.inputs[0]
    with holding.client() as http, grpc.insecure_channel(holding.grpc_url) as channel, ThreadPoolExecutor(2) as pool:
        before = scrape(http)
        by_grpc = pool.submit(service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer,
                              pixels_request(image_model, pixels[:1]), timeout=30)
        by_rest = pool.submit(http.post, f"/v2/models/{image_model.name}/infer", json={"inputs": [
            {"name": spec.name, "shape": [1, *pixels.shape[1:]], "datatype": "FP32", "data": pixels[1].ravel().tolist()}]})
        grpc_logits, rest_answer = logits_of(by_grpc.result()), by_rest.result()
        after = scrape(http)
    assert rest_answer.status_code == 200, rest_answer.text
    expected = image_model.run({spec.name: pixels})
    np.testing.assert_allclose(grpc_logits[0], expected[0], rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)
    np.testing.assert_allclose(rest_answer.json()["outputs"][0]["data"], expected[1], rtol=SCORE_TOLERANCE,
                               atol=SCORE_TOLERANCE)
    name = image_model.name
    assert value(after, "modelserver_batch_size_count", model=name) - value(
        before, "modelserver_batch_size_count", model=name) == 1, "the two requests ran in separate batches"
    assert batches_larger_than_one(after, name) - batches_larger_than_one(before, name) == 1


def test_a_grpc_deadline_that_expires_in_the_queue_never_runs(holding: ServerProcess, image_model: ModelUnderTest,
                                                              digits: list[bytes]) -> None:
    client = triton_grpc.InferenceServerClient(holding.grpc_url)
    pixels = image_model.image_tensor(digits[0])[None]
    tensor = triton_grpc.InferInput(image_model.config.inputs[0].name, list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    with holding.client() as http:
        before = scrape(http)
        started = time.monotonic()
        with pytest.raises(InferenceServerException) as caught:
            client.infer(image_model.name, [tensor], client_timeout=0.3)
        assert status_of(caught) == "DEADLINE_EXCEEDED"
        assert time.monotonic() - started < HOLD_MS / 1000
        time.sleep(HOLD_MS / 1000 + 0.5)  # past the batching window: the batch would have run by now
        after = scrape(http)
        name = image_model.name
        assert value(after, "modelserver_batch_size_count", model=name) == value(
            before, "modelserver_batch_size_count", model=name), "a request past its deadline was run"
        answered = client.infer(image_model.name, [tensor], client_timeout=30)
    np.testing.assert_allclose(answered.as_numpy(image_model.config.outputs[0].name),
                               image_model.run({image_model.config.inputs[0].name: pixels}),
                               rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)
    client.close()


def test_the_servers_deadline_applies_to_grpc_requests_without_one(start_server: StartServer,
                                                                    image_model: ModelUnderTest) -> None:
    """With no client deadline, SERVE_REQUEST_TIMEOUT_S is the request's: the server answers DEADLINE_EXCEEDED
    itself (no client cancels anything here), and the request never runs."""
    server = start_server(MODELS_DIR, grpc=True, SERVE_MODELS=image_model.name, SERVE_BATCH_SIZE_SEARCH="false",
                          SERVE_MAX_BATCH_WAIT_MS=str(HOLD_MS), SERVE_REQUEST_TIMEOUT_S="0.3")
    server.wait_ready()
    pixels = np.zeros([1, *image_model.config.inputs[0].shape[1:]], dtype=np.float32)
    with server.client() as http, grpc.insecure_channel(server.grpc_url) as channel:
        before = scrape(http)
        with pytest.raises(grpc.RpcError) as caught:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(pixels_request(image_model, pixels))
        time.sleep(HOLD_MS / 1000 + 0.5)
        after = scrape(http)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert dict(caught.value.trailing_metadata())["x-error-code"] == "deadline_exceeded"
    assert value(after, "modelserver_batch_size_count", model=image_model.name) == value(
        before, "modelserver_batch_size_count", model=image_model.name), "a request past its deadline was run"


def test_a_full_queue_answers_unavailable_with_a_retry_hint(holding: ServerProcess, image_model: ModelUnderTest) -> None:
    pixels = np.zeros([1, *image_model.config.inputs[0].shape[1:]], dtype=np.float32)
    with holding.client() as http, grpc.insecure_channel(holding.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        queued = [stub.ModelInfer.future(pixels_request(image_model, pixels), timeout=30) for _ in range(QUEUE)]
        holding.wait_for(lambda probe: value(scrape(probe), "modelserver_queue_depth", model=image_model.name) == QUEUE,
                         10, what="the queue to fill")
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(pixels_request(image_model, pixels), timeout=30)
        for future in queued:
            assert logits_of(future.result()).shape == (1, len(image_model.labels))
        assert http.get("/health/live").status_code == 200
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    trailers = dict(caught.value.trailing_metadata())
    assert trailers["x-error-code"] == "queue_full" and int(trailers["retry-after"]) >= 1


# Keys ------------------------------------------------------------------------------------------------

INFER_KEY, ADMIN_KEY, SLOW_KEY = "grpc-infer-key-1", "grpc-admin-key-2", "grpc-slow-key-3"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, image_model: ModelUnderTest,
          text_model: ModelUnderTest) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("keyed")
    keys_file = workdir / "keys.toml"
    keys_file.write_text("".join(
        f'[[key]]\nid = "{key_id}"\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\nrole = "{role}"\n{models}\n'
        for key_id, key, role, models in [("digits", INFER_KEY, "infer", f'models = ["{image_model.name}"]'),
                                          ("ops", ADMIN_KEY, "admin", ""),
                                          ("slow", SLOW_KEY, "infer", "rate_per_s = 0.05\nburst = 1")]))
    server = ServerProcess(MODELS_DIR, workdir, grpc=True, env={
        "SERVE_MODELS": f"{image_model.name},{text_model.name}", "SERVE_API_KEYS_FILE": str(keys_file)})
    server.start().wait_ready()
    yield server
    server.stop()


def test_the_same_keys_and_roles_as_rest(keyed: ServerProcess, image_model: ModelUnderTest,
                                         text_model: ModelUnderTest) -> None:
    client = triton_grpc.InferenceServerClient(keyed.grpc_url)
    pixels = np.zeros([1, *image_model.config.inputs[0].shape[1:]], dtype=np.float32)
    tensor = triton_grpc.InferInput(image_model.config.inputs[0].name, list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    refusals = {
        "no key": (lambda: client.infer(image_model.name, [tensor]), "UNAUTHENTICATED"),
        "a wrong key": (lambda: client.infer(image_model.name, [tensor], headers={"x-api-key": "nope"}),
                        "UNAUTHENTICATED"),
        "a model outside the key's": (lambda: client.get_model_metadata(text_model.name,
                                                                        headers={"x-api-key": INFER_KEY}),
                                      "PERMISSION_DENIED"),
        "a load with an infer key": (lambda: client.load_model(image_model.name,
                                                               headers={"authorization": f"Bearer {INFER_KEY}"}),
                                     "PERMISSION_DENIED"),
    }
    for what, (call, status) in refusals.items():
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert status_of(caught) == status, (what, caught.value.message())
    assert client.is_server_live() and client.get_server_metadata().name  # open, as over REST
    for headers in ({"x-api-key": INFER_KEY}, {"authorization": f"Bearer {INFER_KEY}"}):
        assert client.infer(image_model.name, [tensor], headers=headers).as_numpy("logits").shape == (1, 10)
    admin = {"x-api-key": ADMIN_KEY}
    client.unload_model(text_model.name, headers=admin)
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata(text_model.name, headers=admin)
    assert status_of(caught) == "NOT_FOUND"
    client.load_model(text_model.name, headers=admin)
    assert client.is_model_ready(text_model.name, headers=admin)
    client.close()


def test_a_key_over_its_rate_is_resource_exhausted_with_a_retry_hint(keyed: ServerProcess,
                                                                       image_model: ModelUnderTest) -> None:
    pixels = np.zeros([1, *image_model.config.inputs[0].shape[1:]], dtype=np.float32)
    with keyed.client() as http, grpc.insecure_channel(keyed.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        key = (("x-api-key", SLOW_KEY),)
        assert logits_of(stub.ModelInfer(pixels_request(image_model, pixels), timeout=30, metadata=key)).shape == (1, 10)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(pixels_request(image_model, pixels), timeout=30, metadata=key)
        samples = scrape(http)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    trailers = dict(caught.value.trailing_metadata())
    assert trailers["x-error-code"] == "rate_limited" and int(trailers["retry-after"]) >= 1
    assert value(samples, "modelserver_key_refusals_total", key="slow", model=image_model.name) == 1
    assert value(samples, "modelserver_key_requests_total", key="slow", model=image_model.name) == 2


# Drain on SIGTERM ------------------------------------------------------------------------------------

IN_FLIGHT = 8


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_rpcs_in_flight_refuses_new_ones_and_exits_0(
    workers: int, start_server: StartServer, copy_models: CopyModels, image_model: ModelUnderTest,
    digits: list[bytes],
) -> None:
    def roomy_batches(model_root: Path) -> None:
        edit_config(model_root / image_model.directory.name, max_batch_size=IN_FLIGHT + 8)

    models = copy_models(image_model.name, edit={image_model.name: roomy_batches})
    server = start_server(models, grpc=True, SERVE_MAX_BATCH_WAIT_MS="3000", SERVE_BATCH_SIZE_SEARCH="false",
                          SERVE_SHUTDOWN_DELAY_S="2", SERVE_GRACEFUL_SHUTDOWN_S="30", SERVE_WORKERS=str(workers))
    server.wait_ready()
    pixels = np.stack([image_model.image_tensor(digit) for digit in digits[:IN_FLIGHT]])
    with grpc.insecure_channel(server.grpc_url) as channel:  # one connection: one worker takes them all
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        futures = [stub.ModelInfer.future(pixels_request(image_model, pixels[i:i + 1]), timeout=60)
                   for i in range(IN_FLIGHT)]
        server.wait_for(lambda probe: value(scrape(probe), "modelserver_queue_depth", model=image_model.name)
                        == IN_FLIGHT, 30, what=f"{IN_FLIGHT} RPCs queued")
        server.terminate()
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(pixels_request(image_model, pixels[:1]), timeout=10)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        answers = [logits_of(future.result()) for future in futures]
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(refused.value.trailing_metadata())["x-error-code"] == "shutting_down"
    assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    np.testing.assert_allclose(np.concatenate(answers), image_model.run({image_model.config.inputs[0].name: pixels}),
                               rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)
    assert server.process is not None
    assert server.process.wait(60) == 0, server.log()


# Other models: the photo model, FP16 -----------------------------------------------------------------

PHOTO_MODEL = "efficientnet-lite0-imagenet"


def test_the_photo_model_over_grpc_answers_as_predict(start_server: StartServer) -> None:
    """A JPEG photo as a BYTES input `image`: the server preprocesses it as /predict does."""
    photo_model = ModelUnderTest.load(MODELS_DIR, PHOTO_MODEL)
    server = start_server(MODELS_DIR, grpc=True, SERVE_MODELS=PHOTO_MODEL, SERVE_BATCH_SIZE_SEARCH="false")
    server.wait_ready()
    photo = (Path(__file__).resolve().parents[2] / "examples" / "chelsea.jpg").read_bytes()
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    tensor = triton_grpc.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([photo], dtype=object))
    logits = client.infer(PHOTO_MODEL, [tensor]).as_numpy("logits")[0].astype(np.float64)
    client.close()
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(probabilities, photo_model.image_probabilities(photo), atol=SCORE_TOLERANCE)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        predicted = http.post("/predict", files={"file": ("chelsea.jpg", photo)}).json()
    assert predicted["label"] == photo_model.labels[int(logits.argmax())]


def fp16_digit_model(root: Path, template: ModelUnderTest) -> Path:
    """A linear digit classifier whose input is FP16 (random weights), with the template's labels."""
    rng = np.random.default_rng(11)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["pixel_values"], ["wide"], to=TensorProto.FLOAT),
         helper.make_node("Flatten", ["wide"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"])],
        "fp16-digits",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT16, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(template.labels)])],
        [numpy_helper.from_array(rng.normal(0, 0.05, (28 * 28, len(template.labels))).astype(np.float32), "weights"),
         numpy_helper.from_array(rng.normal(0, 0.1, len(template.labels)).astype(np.float32), "bias")],
    )
    directory = root / "fp16-digits" / "1"
    directory.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
              directory / "model.onnx")
    spec = template.config.inputs[0].model_copy(update={"dtype": "float16"})
    save_config(template.config.model_copy(update={
        "name": "fp16-digits", "version": 1, "sha256": file_sha256(directory / "model.onnx"), "inputs": [spec],
        "metrics": None, "training": {}}), directory)
    return directory / "model.onnx"


def test_fp16_raw_input(tmp_path: Path, start_server: StartServer, image_model: ModelUnderTest,
                        digits: list[bytes]) -> None:
    onnx_file = fp16_digit_model(tmp_path / "repository", image_model)
    server = start_server(tmp_path / "repository", grpc=True, SERVE_BATCH_SIZE_SEARCH="false")
    server.wait_ready()
    pixels = np.stack([image_model.image_tensor(digit) for digit in digits[:3]]).astype(np.float16)
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    metadata = client.get_model_metadata("fp16-digits", as_json=True)
    assert metadata["inputs"][0]["datatype"] == "FP16"
    tensor = triton_grpc.InferInput("pixel_values", list(pixels.shape), "FP16")
    tensor.set_data_from_numpy(pixels)
    got = client.infer("fp16-digits", [tensor]).as_numpy("logits")
    client.close()
    expected = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"pixel_values": pixels})[0]
    np.testing.assert_allclose(got, expected, rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)


def test_a_second_server_cannot_take_the_grpc_port(start_server: StartServer, image_model: ModelUnderTest) -> None:
    first = start_server(MODELS_DIR, grpc=True, SERVE_MODELS=image_model.name)
    status, log = exit_status(MODELS_DIR, first.workdir.parent / "second", SERVE_MODELS=image_model.name,
                              SERVE_GRPC_PORT=str(first.grpc_port))  # on a free HTTP port of its own
    assert status != 0, log
    assert first.process is not None and first.process.poll() is None
