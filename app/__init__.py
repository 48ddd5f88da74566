"""The serving service: FastAPI + ONNX Runtime with dynamic batching."""
