"""The gRPC transport: the Open Inference Protocol v2 over gRPC (`inference.GRPCInferenceService`, Triton's
grpc_service.proto in `protos/`, its generated code in `generated/`, made by scripts/generate_grpc.py)."""
