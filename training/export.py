"""Export to one self-contained ONNX file and prove it computes what the PyTorch model computes."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.utils.data import DataLoader

from training.errors import ExportError

OPSET = 18
PARITY_ATOL = 1e-4
OUTPUT_NAME = "logits"

InputBatch = dict[str, np.ndarray]


def export_onnx(
    model: nn.Module, example: dict[str, torch.Tensor], dynamic_axes: dict[str, dict[int, str]], path: Path
) -> None:
    """Export `model(**example)` with the torch.export-based exporter; `dynamic_axes` names the symbolic
    dimensions of each input (e.g. `{"input_ids": {0: "batch", 1: "sequence"}}`). Weights are stored
    inside the file."""
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    dims = {label: torch.export.Dim(label) for axes in dynamic_axes.values() for label in axes.values()}
    dynamic_shapes = {
        name: {axis: dims[label] for axis, label in axes.items()} for name, axes in dynamic_axes.items()
    }
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args=(),
            kwargs={name: tensor.cpu() for name, tensor in example.items()},
            f=str(path),
            input_names=list(example),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            external_data=False,
            dynamo=True,
            verbose=False,
        )


def check_onnx_file(path: Path, input_names: Sequence[str], dynamic_axes: dict[str, dict[int, str]]) -> None:
    """The file passes the ONNX checker, holds all its weights, and has the expected inputs, output and
    symbolic axes; otherwise `ExportError`."""
    model = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(
            f"{path}: weights were written to external files ({external[:3]}...); expected one file"
        )
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: the ONNX checker rejects the model: {exc}") from None
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)
    if opset < 17:
        raise ExportError(f"{path}: opset {opset}; the serving runtime needs opset 17 or newer")
    graph_inputs = {value.name: value for value in model.graph.input}
    if sorted(graph_inputs) != sorted(input_names):
        raise ExportError(f"{path}: graph inputs {sorted(graph_inputs)}, expected {sorted(input_names)}")
    if model.graph.output[0].name != OUTPUT_NAME:
        raise ExportError(f"{path}: first output is {model.graph.output[0].name!r}, expected {OUTPUT_NAME!r}")
    for name, axes in dynamic_axes.items():
        dims = graph_inputs[name].type.tensor_type.shape.dim
        for axis, label in axes.items():
            if dims[axis].dim_param != label:
                raise ExportError(f"{path}: axis {axis} of {name!r} is not the dynamic axis {label!r}")


def open_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_session(session: ort.InferenceSession, batch: InputBatch) -> np.ndarray:
    """The first output (logits) for one batch."""
    return session.run([OUTPUT_NAME], batch)[0]


def check_parity(
    session: ort.InferenceSession, model: nn.Module, batches: Sequence[InputBatch], atol: float = PARITY_ATOL
) -> float:
    """Run each batch through ONNX Runtime and PyTorch; the largest absolute difference must be at most
    `atol`, else `ExportError` names the offending batch shape. Returns that largest difference."""
    model = model.cpu().eval()
    worst = 0.0
    for batch in batches:
        with torch.no_grad():
            expected = model(**{name: torch.from_numpy(array) for name, array in batch.items()}).numpy()
        actual = run_session(session, batch)
        shape = {name: array.shape for name, array in batch.items()}
        if actual.shape != expected.shape:
            raise ExportError(
                f"ONNX output shape {actual.shape} != PyTorch {expected.shape} for inputs {shape}"
            )
        difference = float(np.abs(actual - expected).max())
        if not difference <= atol:
            raise ExportError(
                f"ONNX Runtime and PyTorch disagree by {difference:.2e} (> {atol:.0e}) for inputs {shape}"
            )
        worst = max(worst, difference)
    return worst


def onnx_predict(session: ort.InferenceSession, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the ONNX model and the labels for every example of `loader`."""
    logits, labels = [], []
    for inputs, targets in loader:
        logits.append(run_session(session, {name: tensor.numpy() for name, tensor in inputs.items()}))
        labels.append(targets.numpy())
    return np.concatenate(logits), np.concatenate(labels)
