"""A real ONNX model that fails on chosen inputs, for the fault tests (built per test, never committed).

It is a linear digit classifier (random weights) over the template's labels and image preprocessing, whose
graph makes ONNX Runtime raise for inputs with a value of ORT_FAULT_AT or more (a Gather index past the end),
and whose output has two more columns than it has labels, the best score landing there when every input
value is BAD_OUTPUT_AT or more: the server then meets an output it cannot label, an unexpected error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_repository import file_sha256, save_config

from .support import ModelUnderTest, png_bytes

FAULTY = "faulty-digits"
ORT_FAULT_AT = 2.5  # normalized pixel value: a pixel of 230 or more in a digit
BAD_OUTPUT_AT = 1.5  # normalized pixel value: every pixel 152 or more


def faulty_graph(labels: int) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    initializers = [
        numpy_helper.from_array(rng.normal(0, 0.05, (28 * 28, labels)).astype(np.float32), "weights"),
        numpy_helper.from_array(rng.normal(0, 0.1, labels).astype(np.float32), "bias"),
        numpy_helper.from_array(np.array(ORT_FAULT_AT, np.float32), "fault_at"),
        numpy_helper.from_array(np.zeros(1, np.float32), "one_zero"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_1"),
        numpy_helper.from_array(np.array(1000.0, np.float32), "scale"),
        numpy_helper.from_array(np.array(1000.0 * BAD_OUTPUT_AT - 100, np.float32), "offset"),
    ]
    nodes = [
        helper.make_node("Flatten", ["pixel_values"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "weights", "bias"], ["scores"]),
        # [0] indexed by floor(max / ORT_FAULT_AT): 0 below it, out of bounds at or above it.
        helper.make_node("ReduceMax", ["pixel_values"], ["peak"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Div", ["peak", "fault_at"], ["ratio"]),
        helper.make_node("Floor", ["ratio"], ["floor"]),
        helper.make_node("Cast", ["floor"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["one_zero", "index"], ["zero"]),
        helper.make_node("Unsqueeze", ["zero", "axis_1"], ["zero_column"]),
        helper.make_node("Add", ["scores", "zero_column"], ["checked_scores"]),
        # Two unlabelled columns scoring 1000 * (min - BAD_OUTPUT_AT) + 100: far below the rest until then.
        helper.make_node("ReduceMin", ["pixel_values"], ["low"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["low", "scale"], ["scaled_low"]),
        helper.make_node("Sub", ["scaled_low", "offset"], ["extra"]),
        helper.make_node("Unsqueeze", ["extra", "axis_1"], ["extra_column"]),
        helper.make_node("Concat", ["checked_scores", "extra_column", "extra_column"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, FAULTY, [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels + 2])], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model


def build_faulty_model(root: Path, template: ModelUnderTest) -> Path:
    """FAULTY version 1 under `root`, with the template's labels and image preprocessing."""
    directory = root / FAULTY / "1"
    directory.mkdir(parents=True)
    onnx.save(faulty_graph(len(template.labels)), directory / "model.onnx")
    config = template.config.model_copy(update={
        "name": FAULTY, "version": 1, "onnx_file": "model.onnx", "sha256": file_sha256(directory / "model.onnx"),
        "metrics": None, "training": {},
    })
    save_config(config, directory)
    return root


def dim_digit(pixels: np.ndarray) -> bytes:
    """A digit whose brightest pixel is 200: every value under ORT_FAULT_AT, the lowest under BAD_OUTPUT_AT."""
    return png_bytes((pixels.astype(np.float32) * 200 / max(int(pixels.max()), 1)).astype(np.uint8))


def bright_digit(pixels: np.ndarray) -> bytes:
    """A digit with a white pixel: ONNX Runtime fails on it."""
    bright = pixels.copy()
    bright[14, 14] = 255
    return png_bytes(bright)
