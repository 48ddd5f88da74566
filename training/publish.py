"""After training: plots, ONNX export and checks, optional INT8 or float16 conversion, the reference profile
of the published ONNX model (reference.json), config and publication."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.utils.data import DataLoader

from model_repository import (
    EvaluationMetrics,
    ImagePreprocessing,
    ModelConfig,
    TensorSpec,
    TextPreprocessing,
    file_sha256,
)
from model_repository.reference import write_reference
from training.errors import ExportError
from training.evaluate import compute_metrics
from training.export import (
    InputBatch,
    check_onnx_file,
    check_parity,
    export_onnx,
    onnx_predict,
    open_session,
    run_session,
)
from training.latency import latency_table
from training.loop import FitResult
from training.options import CommonOptions
from training.plots import plot_confusion_matrix, plot_training_curves
from training.quantize import convert_fp16, quantize_dynamic_int8, quantize_static_qdq
from training.reference import ReferenceSet, reference_profile
from training.report import print_summary
from training.repository import publish, staging_dir


@dataclass
class TrainedModel:
    """Everything a task hands over once training and PyTorch evaluation are done. A model exported as
    published, with no labelled data (`test_loader`, `metrics` and `fit` None), is compared on its
    `parity_batches` alone. `reference_set` is what the published model's reference profile is computed
    on: the held-out split, or the sample photos for a model without one."""

    task: Literal["image", "text"]
    model: nn.Module
    labels: list[str]
    preprocessing: ImagePreprocessing | TextPreprocessing
    inputs: list[TensorSpec]
    example: dict[str, torch.Tensor]
    parity_batches: list[InputBatch]
    test_loader: DataLoader | None
    metrics: EvaluationMetrics | None
    fit: FitResult | None
    training: dict[str, Any]
    reference_set: ReferenceSet
    calibration: list[InputBatch] | None = None
    extra_check: Callable[[ort.InferenceSession], str] | None = None
    write_files: Callable[[Path], None] | None = None
    facts: dict[str, str] = field(default_factory=dict)


def _dynamic_axes(inputs: list[TensorSpec]) -> dict[str, dict[int, str]]:
    return {
        spec.name: {axis: dim for axis, dim in enumerate(spec.shape) if isinstance(dim, str)}
        for spec in inputs
    }


def _reduce_precision(
    trained: TrainedModel, fp32_path: Path, target: Path, options: CommonOptions
) -> tuple[EvaluationMetrics | None, dict[str, Any]]:
    """Write the INT8 (`--quantize`) or float16 (`--fp16`) model to `target` and compare it with the float32
    one: file size, CPU latency at batch 1 and 8, top-1 agreement and, with labels, the held-out accuracy,
    which may drop by `max_quantization_drop` at most."""
    kind = "int8" if options.quantize else "fp16"
    if options.fp16:
        method = "float16 weights and compute, float32 inputs and outputs"
        convert_fp16(fp32_path, target)
    elif trained.calibration is not None:
        method = "static QDQ (per-channel INT8, calibrated)"
        quantize_static_qdq(fp32_path, target, trained.calibration)
    else:
        method = "dynamic (INT8 weights)"
        quantize_dynamic_int8(fp32_path, target)
    reference, reduced = open_session(fp32_path), open_session(target)
    metrics = None
    if trained.test_loader is not None:
        expected, labels = onnx_predict(reference, trained.test_loader)
        logits, _ = onnx_predict(reduced, trained.test_loader)
        metrics = compute_metrics(logits, labels, f"{trained.metrics.split}, {kind.upper()} ONNX")
        compared_on = trained.metrics.split
    else:
        expected = np.concatenate([run_session(reference, batch) for batch in trained.parity_batches])
        logits = np.concatenate([run_session(reduced, batch) for batch in trained.parity_batches])
        compared_on = f"{len(logits)} parity inputs ({trained.training.get('dataset', 'no labels')})"
    info: dict[str, Any] = {
        "method": method,
        "top1_agreement": float((expected.argmax(axis=1) == logits.argmax(axis=1)).mean()),
        "compared_on": compared_on,
        "fp32_bytes": fp32_path.stat().st_size,
        f"{kind}_bytes": target.stat().st_size,
        "cpu_latency_ms": {
            "fp32": latency_table(reference, trained.parity_batches[0]),
            kind: latency_table(reduced, trained.parity_batches[0]),
        },
    }
    if metrics is not None:
        info.update({"fp32_accuracy": trained.metrics.accuracy, f"{kind}_accuracy": metrics.accuracy})
        drop = trained.metrics.accuracy - metrics.accuracy
        if drop > options.max_quantization_drop:
            raise ExportError(
                f"{'INT8 quantization' if options.quantize else 'float16'} costs {100 * drop:.2f} accuracy points "
                f"({100 * trained.metrics.accuracy:.2f}% -> {100 * metrics.accuracy:.2f}%), "
                f"more than --max-quantization-drop {options.max_quantization_drop}"
            )
    return metrics, info


def _precision_facts(kind: str, info: dict[str, Any]) -> dict[str, str]:
    """Summary-table lines of a `_reduce_precision` report."""
    latency = info["cpu_latency_ms"]
    facts = {
        f"{kind} top-1 agreement with fp32": f"{100 * info['top1_agreement']:.1f}% on {info['compared_on']}",
        f"size fp32 -> {kind}": f"{info['fp32_bytes'] / 1e6:.2f} MB -> {info[f'{kind}_bytes'] / 1e6:.2f} MB",
        f"CPU ms, batch 1 / 8, fp32 -> {kind}": (
            f"{latency['fp32']['1']:.1f} / {latency['fp32']['8']:.1f} -> "
            f"{latency[kind]['1']:.1f} / {latency[kind]['8']:.1f}"
        ),
    }
    if "fp32_accuracy" in info:
        change = info[f"{kind}_accuracy"] - info["fp32_accuracy"]
        facts[f"{kind.upper()} accuracy change"] = f"{100 * change:+.2f} points"
    return facts


def publish_model(trained: TrainedModel, options: CommonOptions, version: int) -> Path:
    """Export, check, (quantize), write reports and config into a staging folder, then publish it.

    Raises `ExportError` (leaving the repository untouched) if the ONNX model fails a check.
    """
    staging = staging_dir(options.models_dir, options.name, version)
    try:
        directory = _build_version(trained, options, version, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _build_version(trained: TrainedModel, options: CommonOptions, version: int, staging: Path) -> Path:
    print("exporting to ONNX and checking it against PyTorch...", file=sys.stderr)
    dynamic_axes = _dynamic_axes(trained.inputs)
    model_path = staging / "model.onnx"
    facts = dict(trained.facts)
    training = dict(trained.training)
    metrics = trained.metrics
    with tempfile.TemporaryDirectory() as scratch:
        fp32_path = Path(scratch) / "model.onnx"
        export_onnx(trained.model, trained.example, dynamic_axes, fp32_path)
        check_onnx_file(fp32_path, [spec.name for spec in trained.inputs], dynamic_axes)
        session = open_session(fp32_path)
        worst = check_parity(session, trained.model, trained.parity_batches)
        shapes = ", ".join("x".join(map(str, next(iter(b.values())).shape)) for b in trained.parity_batches)
        facts["ONNX parity"] = f"max |diff| {worst:.1e} on batches {shapes}"
        training["onnx_parity_max_abs_diff"] = worst
        if trained.extra_check is not None:
            facts["padding check"] = trained.extra_check(session)
        if options.quantize or options.fp16:
            kind = "int8" if options.quantize else "fp16"
            print(f"converting to {kind.upper()} and comparing it with float32...", file=sys.stderr)
            key = "quantization" if options.quantize else "fp16"
            reduced_metrics, training[key] = _reduce_precision(trained, fp32_path, model_path, options)
            metrics = reduced_metrics or metrics
            facts.update(_precision_facts(kind, training[key]))
        else:
            shutil.copyfile(fp32_path, model_path)
    facts["ONNX file"] = f"{model_path.stat().st_size / 1e6:.2f} MB"
    reference = reference_profile(open_session(model_path), trained.reference_set, trained.labels, "logits")
    write_reference(staging, reference)
    facts["reference.json"] = (
        f"{reference.num_samples} {reference.source} samples, 5th-percentile confidence "
        f"{reference.low_confidence_threshold:.3f}"
    )
    if trained.write_files is not None:
        trained.write_files(staging)
    if metrics is not None:
        (staging / "metrics.json").write_text(metrics.model_dump_json(indent=2) + "\n", encoding="utf-8")
        plot_confusion_matrix(
            metrics.confusion_matrix, trained.labels, staging / "confusion_matrix.png", metrics.split
        )
    if trained.fit is not None:
        plot_training_curves(trained.fit.history, staging / "training_curves.png", trained.fit.best_epoch)
        training["history"] = trained.fit.as_dict()["history"]
    config = ModelConfig(
        name=options.name,
        version=version,
        task=trained.task,
        description=options.description,
        default=options.default,
        sha256=file_sha256(model_path),
        inputs=trained.inputs,
        outputs=[TensorSpec(name="logits", dtype="float32", shape=["batch", len(trained.labels)])],
        output_type="logits",
        labels=trained.labels,
        preprocessing=trained.preprocessing,
        max_batch_size=options.max_batch_size,
        metrics=metrics,
        training=json.loads(json.dumps(training, default=str)),
    )
    directory = publish(staging, config, options.models_dir)
    print_summary(options.name, directory, metrics, facts)
    return directory
