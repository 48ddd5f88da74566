"""The reference profile of a published version (`model_repository.reference`): the ONNX model's answers on a
known input set, taken as the server takes them.

A `ReferenceSet` is the inputs, preprocessed as served, with their true labels when known: the held-out
split of a training run (`held_out`) or the sample photos of scikit-image and scikit-learn
(`sample_photos`, for the ImageNet classifier, which has no held-out set here). `reference_profile` runs
them through an ONNX Runtime session and turns the scores into top-1 labels and confidences as the server
does: `model_repository.scores.class_probabilities`, top-1 the first highest score.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnxruntime as ort
from torch.utils.data import DataLoader

from model_repository import ImagePreprocessing
from model_repository.image_transform import image_to_array
from model_repository.reference import ReferenceProfile, ReferenceSource, profile_of
from model_repository.scores import class_probabilities
from training.data.sample_photos import sample_photos
from training.export import InputBatch, run_session
from training.image_spec import INPUT_NAME

PHOTO_BATCH = 8

Batches = Iterable[tuple[InputBatch, np.ndarray | None]]


@dataclass(frozen=True)
class ReferenceSet:
    """Inputs as the server feeds them to the model, in batches, each with its true labels or None."""

    source: ReferenceSource
    description: str
    batches: Batches


class LoaderBatches:
    """The (inputs, labels) batches of a training `DataLoader` as NumPy arrays; iterable more than once."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[InputBatch, np.ndarray]]:
        for inputs, targets in self.loader:
            yield {name: tensor.numpy() for name, tensor in inputs.items()}, targets.numpy()


def held_out_set(loader: DataLoader, split: str) -> ReferenceSet:
    """The held-out split of a training run, `split` naming the data and its count (the metrics' split)."""
    return ReferenceSet(
        source="held_out",
        description=f"held-out {split}, answered by the published model.onnx",
        batches=LoaderBatches(loader),
    )


def sample_photo_set(spec: ImagePreprocessing) -> ReferenceSet:
    """The sample photos of scikit-image and scikit-learn, center-cropped as served, without true labels."""
    photos = sample_photos()
    arrays = [image_to_array(photo, spec) for photo in photos.values()]
    batches = [
        ({INPUT_NAME: np.stack(arrays[start : start + PHOTO_BATCH])}, None)
        for start in range(0, len(arrays), PHOTO_BATCH)
    ]
    description = (
        f"{len(photos)} sample photos that ship with scikit-image and scikit-learn ({', '.join(photos)}), "
        "center-cropped as served; no true labels, so no accuracy. A weak reference: "
        f"{len(photos)} photos, many of them microscopy, texture or text pages, cover a few of the 1,000 "
        "classes, so the label mix of real traffic will differ from it by construction, and its "
        f"5th-percentile confidence is the second lowest of {len(photos)} values. Use it as a rough sanity "
        "bound; a baseline from the first live predictions fits a real deployment better."
    )
    return ReferenceSet(source="sample_photos", description=description, batches=batches)


def served_top1(
    outputs: np.ndarray, output_type: Literal["logits", "probabilities"]
) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 label index and score per row, as the server answers them."""
    scores = class_probabilities(outputs, output_type)
    predicted = scores.argmax(axis=1)
    return predicted, scores[np.arange(len(scores)), predicted]


def reference_profile(
    session: ort.InferenceSession,
    reference_set: ReferenceSet,
    labels: list[str],
    output_type: Literal["logits", "probabilities"],
) -> ReferenceProfile:
    """Run every batch of `reference_set` through `session` and profile the answers; with true labels for
    every batch, the profile carries the accuracy."""
    outputs, truth = [], []
    for batch, targets in reference_set.batches:
        outputs.append(run_session(session, batch))
        truth.append(targets)
    predicted, confidence = served_top1(np.concatenate(outputs), output_type)
    known = all(targets is not None for targets in truth)
    return profile_of(
        labels,
        predicted,
        confidence,
        source=reference_set.source,
        description=reference_set.description,
        true_labels=np.concatenate(truth) if known else None,
    )
