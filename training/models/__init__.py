"""Classifier architectures. Each `forward` takes the ONNX input names as keyword arguments and returns logits."""
