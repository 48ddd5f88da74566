"""The reference profile of a model version: how it behaved on known data, kept as `reference.json` beside its
`config.json`, so that the server can compare live traffic with it (model-quality monitoring).

A profile holds the distribution of predicted labels, the histogram of top-1 confidence on the fixed
`CONFIDENCE_EDGES`, the 5th percentile of that confidence (the default low-confidence threshold), the
accuracy when the true labels were known, the number of samples and where they came from (`source`):

- `held_out`: the held-out set of the training run (`training/` writes it at export);
- `sample_photos`: a handful of sample photos, for a model trained elsewhere (the bundled ImageNet model): a
  weak reference, said so in `description`;
- `live_baseline`: the first predictions the server made with this version, recorded by the server.

Shared by training and serving: numpy and pydantic only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REFERENCE_FILE = "reference.json"

ReferenceSource = Literal["held_out", "sample_photos", "live_baseline"]

# Upper edges of the top-1 confidence histogram: 20 bins of 0.05 over [0, 1]. The server's live histogram uses
# the same edges, so the two compare bin by bin.
CONFIDENCE_EDGES: tuple[float, ...] = tuple(round(0.05 * step, 2) for step in range(1, 21))

LOW_CONFIDENCE_PERCENTILE = 5.0


class ReferenceProfileError(Exception):
    """A reference file cannot be read or is malformed."""


class ReferenceProfile(BaseModel):
    """How one model version answered a known set of inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    source: ReferenceSource
    description: str = Field(min_length=1, description="the data, e.g. 'sst2 validation (872 sentences)'")
    num_samples: int = Field(ge=1)
    accuracy: float | None = Field(default=None, ge=0, le=1, description="None when true labels were unknown")
    label_counts: dict[str, int] = Field(description="predicted label -> times predicted; every label present")
    confidence_edges: list[float] = Field(description="upper edges of the top-1 confidence bins")
    confidence_counts: list[int] = Field(description="samples per confidence bin")
    low_confidence_threshold: float = Field(ge=0, le=1, description="5th percentile of top-1 confidence")

    @model_validator(mode="after")
    def _consistent(self) -> ReferenceProfile:
        if sum(self.label_counts.values()) != self.num_samples:
            raise ValueError("label_counts must add up to num_samples")
        if any(count < 0 for count in self.label_counts.values()):
            raise ValueError("label_counts must not be negative")
        if len(self.confidence_counts) != len(self.confidence_edges):
            raise ValueError("confidence_counts needs one count per edge")
        if sum(self.confidence_counts) != self.num_samples:
            raise ValueError("confidence_counts must add up to num_samples")
        return self

    def label_share(self) -> dict[str, float]:
        """Each label's share of the predictions, adding up to 1."""
        return {label: count / self.num_samples for label, count in self.label_counts.items()}


def profile_of(labels: Sequence[str], predicted: Sequence[int] | np.ndarray, confidence: Sequence[float] | np.ndarray,
               *, source: ReferenceSource, description: str, true_labels: Sequence[int] | np.ndarray | None = None,
               ) -> ReferenceProfile:
    """The profile of predictions `predicted` (label indices) with top-1 `confidence`, for a model with
    `labels`; `true_labels` (indices) gives the accuracy."""
    predicted = np.asarray(predicted, dtype=np.int64)
    confidence = np.asarray(confidence, dtype=np.float64)
    if predicted.ndim != 1 or predicted.shape != confidence.shape or predicted.size == 0:
        raise ValueError("predicted and confidence need the same, non-zero length")
    if predicted.min() < 0 or predicted.max() >= len(labels):
        raise ValueError("a predicted index is outside the labels")
    counts = np.bincount(predicted, minlength=len(labels))
    bins = np.searchsorted(np.asarray(CONFIDENCE_EDGES), np.clip(confidence, 0.0, 1.0), side="left")
    accuracy = None
    if true_labels is not None:
        true_labels = np.asarray(true_labels, dtype=np.int64)
        if true_labels.shape != predicted.shape:
            raise ValueError("true_labels needs one label per prediction")
        accuracy = float(np.mean(true_labels == predicted))
    return ReferenceProfile(
        source=source,
        description=description,
        num_samples=int(predicted.size),
        accuracy=accuracy,
        label_counts={label: int(count) for label, count in zip(labels, counts, strict=True)},
        confidence_edges=list(CONFIDENCE_EDGES),
        confidence_counts=np.bincount(bins, minlength=len(CONFIDENCE_EDGES)).astype(int).tolist(),
        low_confidence_threshold=float(np.percentile(confidence, LOW_CONFIDENCE_PERCENTILE)),
    )


def write_reference(directory: Path, profile: ReferenceProfile) -> Path:
    """Write `profile` as `<directory>/reference.json`, atomically."""
    path = Path(directory) / REFERENCE_FILE
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".reference-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(json.dumps(profile.model_dump(mode="json"), indent=2) + "\n")
    os.replace(temporary, path)
    return path


def load_reference(directory: Path) -> ReferenceProfile | None:
    """The profile in `<directory>/reference.json`; None when there is none; `ReferenceProfileError` when malformed."""
    path = Path(directory) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        return ReferenceProfile.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        raise ReferenceProfileError(f"invalid {path}: {exc}") from exc
