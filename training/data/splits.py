"""Seeded, stratified splits."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from training.errors import DatasetError


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out), with `fraction` of each class held out; `what` names the split in errors."""
    if not 0 < fraction < 1:
        raise DatasetError(f"{what}: the split fraction must be between 0 and 1, got {fraction}")
    counts = np.bincount(labels)
    if (counts[counts > 0] < 2).any():
        rare = [int(label) for label in np.flatnonzero(counts == 1)]
        raise DatasetError(
            f"{what}: classes {rare} have a single example; a stratified split needs at least 2"
        )
    indices = np.arange(len(labels))
    try:
        kept, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as exc:
        raise DatasetError(
            f"{what}: cannot split {len(labels)} examples stratified by class: {exc}"
        ) from None
    return np.sort(kept), np.sort(held)
