"""The gRPC transport: the Open Inference Protocol v2 over gRPC (`inference.GRPCInferenceService`, from Triton's
grpc_service.proto in `protos/`, with its generated code in `generated/`, made by scripts/generate_grpc.py) and
`grpc.health.v1`, served beside the HTTP app in each server process when `SERVE_GRPC_PORT` is set
(`server.GrpcTransport`). Like `app.transport.http`, it parses its messages into the data plane's values
(`converters`), calls `app.dataplane` and maps `app.errors` to its status codes (`errors`)."""
