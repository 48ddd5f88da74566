"""How each compared server is loaded: its requests, the client that sends them, and its answers read back.

Every server but the trivial one is loaded with the case's inputs, one input per request. The naive servers and
`service` get /predict requests (the image's bytes, or `{"text": ...}`). The service also speaks the Open
Inference Protocol v2; three more servers are the service loaded through it, each with one BYTES input named
after the model's task (`image`: the encoded image, `text`: the sentence), which the service preprocesses as
/predict's:

* `service-v2-json`: REST `POST /v2/models/<model>/infer`, the text in the JSON body (texts only: JSON cannot
  carry an encoded image, the service refuses it);
* `service-v2-binary`: the same path with the binary tensor extension (`Inference-Header-Content-Length`): the
  input's bytes, Triton's length-prefixed BYTES elements, after the JSON header; the outputs come back binary;
* `service-grpc`: gRPC `ModelInfer` over one grpc.aio channel (HTTP/2, every session's call multiplexed on it),
  the request messages built with the generated classes (app/transport/grpc/generated) and serialized once,
  as the HTTP requests are prebuilt; BYTES in `raw_input_contents`, as Triton's clients send them.

Answers are read back as /predict's (`label`, `score`, `top_k`) or, for the v2 protocols, as the top-1 label and
its probability from the first output (the scores; a softmax when the model gives logits), so that one check
(`answers.compare_answers`) compares every server with the same reference.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from inputs import InputSet
from loadgen import Client, HttpClient, build_request

from app.transport.grpc.generated import grpc_service_pb2 as pb
from model_repository import ModelConfig

V2_JSON, V2_BINARY, GRPC = "service-v2-json", "service-v2-binary", "service-grpc"
V2_SERVERS = (V2_JSON, V2_BINARY, GRPC)
MODEL_INFER = f"/{pb.DESCRIPTOR.services_by_name['GRPCInferenceService'].full_name}/ModelInfer"
SCORE_DTYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


def length_prefixed(item: bytes) -> bytes:
    """One BYTES element as Triton's raw data: its length (4 bytes, little-endian), then its bytes."""
    return struct.pack("<I", len(item)) + item


def item_bytes(item: bytes | str) -> bytes:
    return item.encode() if isinstance(item, str) else item


def predict_requests(server: str, port: int, model: str, inputs: InputSet, api_key: str | None) -> list[bytes]:
    """/predict requests: the same bodies for the naive servers and the service (which is also told the model)."""
    path = "/predict" if server.startswith("naive") else f"/predict?model={model}"
    if inputs.is_text:
        return [build_request("POST", path, port, json.dumps({"text": text}).encode(), inputs.content_type, api_key)
                for text in inputs.items]
    return [build_request("POST", path, port, data, inputs.content_type, api_key) for data in inputs.items]


def v2_json_requests(port: int, config: ModelConfig, inputs: InputSet, api_key: str | None) -> list[bytes]:
    if not inputs.is_text:
        raise ValueError(f"{V2_JSON}: JSON cannot carry encoded images; load {config.name} through {V2_BINARY}"
                         f" or {GRPC}")
    path = f"/v2/models/{config.name}/infer"
    return [build_request("POST", path, port, json.dumps({"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}).encode(), "application/json", api_key)
        for text in inputs.items]


def v2_binary_requests(port: int, config: ModelConfig, inputs: InputSet, api_key: str | None) -> list[bytes]:
    path = f"/v2/models/{config.name}/infer"
    requests = []
    for item in inputs.items:
        data = length_prefixed(item_bytes(item))
        head = json.dumps({"inputs": [{"name": config.task, "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(data)}}],
                           "parameters": {"binary_data_output": True}}).encode()
        requests.append(build_request("POST", path, port, head + data, "application/octet-stream", api_key,
                                      {"inference-header-content-length": str(len(head))}))
    return requests


def grpc_requests(config: ModelConfig, inputs: InputSet) -> list[bytes]:
    messages = []
    for item in inputs.items:
        request = pb.ModelInferRequest(model_name=config.name)
        request.inputs.add(name=config.task, datatype="BYTES", shape=[1])
        request.raw_input_contents.append(length_prefixed(item_bytes(item)))
        messages.append(request.SerializeToString())
    return messages


class GrpcSession:
    """One closed-loop session: one `ModelInfer` call at a time on the client's shared channel."""

    def __init__(self, call: Any, requests: list[bytes], metadata: tuple[tuple[str, str], ...]) -> None:
        self.call, self.requests, self.metadata = call, requests, metadata

    async def open(self) -> None:
        """Nothing to open: the channel connects (and reconnects) by itself."""

    async def exchange(self, index: int) -> tuple[str | None, bytes]:
        import grpc

        try:
            return None, await self.call(self.requests[index], metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            return f"gRPC {exc.code().name}", b""

    def close(self) -> None:
        """Nothing to close: the channel is the client's."""


class GrpcClient:
    """Serialized `ModelInferRequest`s sent over one grpc.aio channel, opened on first use (in the running loop),
    with `x-api-key` in their metadata when an `api_key` is given."""

    transport_errors: tuple[type[BaseException], ...] = ()  # a broken connection is an RPC status

    def __init__(self, port: int, requests: list[bytes], api_key: str | None) -> None:
        self.port, self.requests = port, requests
        self.metadata = (("x-api-key", api_key),) if api_key is not None else ()
        self.channel: Any = None

    def session(self) -> GrpcSession:
        import grpc

        if self.channel is None:
            self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}",
                                                     options=[("grpc.max_receive_message_length", -1)])
        # No (de)serializers: the requests are already bytes, and the answer is kept as bytes.
        return GrpcSession(self.channel.unary_unary(MODEL_INFER), self.requests, self.metadata)

    async def aclose(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None


def client_for(server: str, port: int, grpc_port: int | None, config: ModelConfig, inputs: InputSet,
               api_key: str | None) -> Client:
    """The client that loads `server`, with one prebuilt request per input (the trivial server: one GET), each
    carrying `api_key` (if any)."""
    if server == "trivial":
        return HttpClient(port, [build_request("GET", "/ping", port)])
    if server == V2_JSON:
        return HttpClient(port, v2_json_requests(port, config, inputs, api_key))
    if server == V2_BINARY:
        return HttpClient(port, v2_binary_requests(port, config, inputs, api_key))
    if server == GRPC:
        assert grpc_port is not None
        return GrpcClient(grpc_port, grpc_requests(config, inputs), api_key)
    return HttpClient(port, predict_requests(server, port, config.name, inputs, api_key))


def top_answer(scores: np.ndarray, config: ModelConfig) -> dict[str, Any]:
    """The top-1 label and its probability, from one row of the model's first output."""
    scores = scores.astype(np.float64).reshape(-1)
    if config.output_type == "logits":
        exp = np.exp(scores - scores.max())
        scores = exp / exp.sum()
    best = int(np.argmax(scores))
    return {"label": config.labels[best], "score": float(scores[best])}


def read_answer(server: str, body: bytes, config: ModelConfig) -> dict[str, Any]:
    """An answer body as /predict's JSON, or (v2 protocols) the top-1 label and score of its scores output."""
    name = config.outputs[0].name
    if server == V2_JSON:
        output = next(item for item in json.loads(body)["outputs"] if item["name"] == name)
        return top_answer(np.asarray(output["data"]), config)
    if server == V2_BINARY:
        head, offset = json.JSONDecoder().raw_decode(body.decode("latin-1"))  # the JSON header is ASCII
        for item in head["outputs"]:
            size = item["parameters"]["binary_data_size"]
            if item["name"] == name:
                return top_answer(np.frombuffer(body[offset:offset + size], SCORE_DTYPES[item["datatype"]]), config)
            offset += size
        raise ValueError(f"no output {name!r} in the answer")
    if server == GRPC:
        response = pb.ModelInferResponse.FromString(body)
        index = next(i for i, item in enumerate(response.outputs) if item.name == name)
        dtype = SCORE_DTYPES[response.outputs[index].datatype]
        return top_answer(np.frombuffer(response.raw_output_contents[index], dtype), config)
    return json.loads(body)
