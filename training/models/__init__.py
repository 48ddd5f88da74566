"""Classifier architectures: each `forward` takes the ONNX input names as keywords and returns logits."""
