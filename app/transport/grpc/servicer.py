"""The RPCs: `inference.GRPCInferenceService` (the Open Inference Protocol v2, with Triton's model configuration
and repository extensions) and `grpc.health.v1.Health`, each a thin call into the data plane (`app.dataplane`),
with the same key rule as the REST routes. The RPCs not served here (statistics, streaming, shared memory,
trace and log settings) answer UNIMPLEMENTED.

Health services: "" and "inference.GRPCInferenceService" are SERVING while the server is ready (REST's
`/health/ready`), "live" while it answers (`/health/live`), and a model's name while that model is ready;
another name is NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.dataplane.access import Operation
from app.dataplane.plane import DataPlane
from app.transport.grpc import converters
from app.transport.grpc.calls import Call, Calls
from app.transport.grpc.generated import grpc_service_pb2 as pb
from app.transport.grpc.generated import grpc_service_pb2_grpc as pb_grpc

SERVICE = "inference.GRPCInferenceService"
LIVENESS = "live"
_SERVICE_PATH = f"/{SERVICE}/"
_CHECK = "/grpc.health.v1.Health/Check"


def _version(version: str) -> str | None:
    """The protocol's empty version: the one served."""
    return version or None


def _not_served(method: str) -> Callable[..., Awaitable[None]]:
    """An RPC left out: UNIMPLEMENTED, where the generated base classes' details name a Python exception."""

    async def answer(self: Any, request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served by this server")

    return answer


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The v2 RPCs over `dataplane`."""

    def __init__(self, dataplane: DataPlane, calls: Calls) -> None:
        self.dataplane = dataplane
        self.calls = calls

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return await self.calls.run(_SERVICE_PATH + "ServerLive", self._server_live, request, context)

    async def _server_live(self, request: pb.ServerLiveRequest, call: Call) -> pb.ServerLiveResponse:
        call.check(Operation.HEALTH)
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return await self.calls.run(_SERVICE_PATH + "ServerReady", self._server_ready, request, context)

    async def _server_ready(self, request: pb.ServerReadyRequest, call: Call) -> pb.ServerReadyResponse:
        call.check(Operation.HEALTH)
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        return await self.calls.run(_SERVICE_PATH + "ModelReady", self._model_ready, request, context)

    async def _model_ready(self, request: pb.ModelReadyRequest, call: Call) -> pb.ModelReadyResponse:
        call.check(Operation.HEALTH, request.name)
        return pb.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, _version(request.version)).ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        return await self.calls.run(_SERVICE_PATH + "ServerMetadata", self._server_metadata, request, context)

    async def _server_metadata(self, request: pb.ServerMetadataRequest, call: Call) -> pb.ServerMetadataResponse:
        return converters.server_metadata_response(self.dataplane.server_metadata())  # open, as REST's GET /v2

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        return await self.calls.run(_SERVICE_PATH + "ModelMetadata", self._model_metadata, request, context)

    async def _model_metadata(self, request: pb.ModelMetadataRequest, call: Call) -> pb.ModelMetadataResponse:
        call.check(Operation.MODELS, request.name)
        return converters.model_metadata_response(self.dataplane.model_metadata(request.name, _version(request.version)))

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext) -> pb.ModelConfigResponse:
        return await self.calls.run(_SERVICE_PATH + "ModelConfig", self._model_config, request, context)

    async def _model_config(self, request: pb.ModelConfigRequest, call: Call) -> pb.ModelConfigResponse:
        call.check(Operation.MODELS, request.name)
        return converters.model_config_response(
            self.dataplane.model_configuration(request.name, _version(request.version)))

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        return await self.calls.run(_SERVICE_PATH + "ModelInfer", self._model_infer, request, context)

    async def _model_infer(self, request: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
        call.check(Operation.MODELS, request.model_name)
        dataplane = self.dataplane
        # From here to the batcher's queue nothing awaits, so a model swap (RepositoryModelLoad) cannot come between.
        model = dataplane.model(request.model_name, _version(request.model_version))
        call.model = model.name
        with dataplane.admit(call.api_key, model):  # the key's quotas, held until the answer
            inputs = dataplane.rows(model, converters.request_tensors(request))
            output_names = tuple(item.name for item in request.outputs)
            outputs = await dataplane.infer(model, inputs, output_names, call.deadline(), call.gone)
        return converters.infer_response(model.name, str(model.config.version), request.id, outputs)

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: grpc.aio.ServicerContext) -> pb.RepositoryModelLoadResponse:
        return await self.calls.run(_SERVICE_PATH + "RepositoryModelLoad", self._load, request, context)

    async def _load(self, request: pb.RepositoryModelLoadRequest, call: Call) -> pb.RepositoryModelLoadResponse:
        """Serve the latest version of the model in the repository (REST: POST /v2/repository/models/{name}/load)."""
        call.check(Operation.REPOSITORY, request.model_name)
        await self.dataplane.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: grpc.aio.ServicerContext) -> pb.RepositoryModelUnloadResponse:
        return await self.calls.run(_SERVICE_PATH + "RepositoryModelUnload", self._unload, request, context)

    async def _unload(self, request: pb.RepositoryModelUnloadRequest, call: Call) -> pb.RepositoryModelUnloadResponse:
        call.check(Operation.REPOSITORY, request.model_name)
        await self.dataplane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


for _method in [name for name in vars(pb_grpc.GRPCInferenceServiceServicer)
                if not name.startswith("_") and name not in vars(InferenceServicer)]:
    setattr(InferenceServicer, _method, _not_served(_method))


class HealthServicer(health_pb2_grpc.HealthServicer):
    """`grpc.health.v1.Health/Check`, for Kubernetes' gRPC probes (services: see the module docstring);
    `Watch` is not served."""

    Watch = _not_served("Watch")

    def __init__(self, dataplane: DataPlane, calls: Calls) -> None:
        self.dataplane = dataplane
        self.calls = calls

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        return await self.calls.run(_CHECK, self._check, request, context)

    async def _check(self, request: health_pb2.HealthCheckRequest, call: Call) -> health_pb2.HealthCheckResponse:
        service = request.service
        call.check(Operation.HEALTH, None if service in ("", SERVICE, LIVENESS) else service)
        if service == LIVENESS:
            serving = self.dataplane.live()
        elif service in ("", SERVICE):
            serving = self.dataplane.ready()
        else:
            serving = self.dataplane.model_ready(service).ready
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)
