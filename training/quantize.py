"""Smaller ONNX models: INT8 with ONNX Runtime (static QDQ, calibrated, for CNNs; dynamic for text models),
and float16 weights and compute for GPUs."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process


class _Batches(CalibrationDataReader):
    def __init__(self, batches: Iterable[dict[str, np.ndarray]]) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_static_qdq(source: Path, target: Path, calibration: Iterable[dict[str, np.ndarray]]) -> None:
    """Per-channel INT8 weights and INT8 activations whose ranges come from the calibration batches."""
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _Batches(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )


def quantize_dynamic_int8(source: Path, target: Path) -> None:
    """INT8 weights; activations quantized on the fly per batch (no calibration needed)."""
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)


def convert_fp16(source: Path, target: Path) -> None:
    """float16 weights and arithmetic inside, float32 inputs and outputs (casts at the edges), so the server
    feeds it exactly as the float32 model."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
