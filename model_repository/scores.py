"""How a model's first output becomes class probabilities, as its config's `output_type` says: a float32
softmax of logits, probabilities as given. The server answers with them, and training profiles a version's
reference (`training.reference`) with the same function, so that both read a model's answers alike.
"""

from __future__ import annotations

from typing import Literal

import numpy as np


def class_probabilities(scores: np.ndarray, output_type: Literal["logits", "probabilities"]) -> np.ndarray:
    """The class probabilities of a batch of `scores` (rows x classes), float32."""
    scores = scores.astype(np.float32, copy=False)
    if output_type == "logits":
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    return scores
