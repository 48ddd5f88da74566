"""Held-out metrics: accuracy, macro precision/recall/F1, ROC-AUC and the confusion matrix."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from model_repository import EvaluationMetrics


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Binary: AUC of the second class; multiclass: one-vs-rest macro. None when a class is absent."""
    num_labels = probabilities.shape[1]
    if len(np.unique(labels)) < num_labels:
        return None
    if num_labels == 2:
        return float(roc_auc_score(labels, probabilities[:, 1]))
    return float(
        roc_auc_score(labels, probabilities, multi_class="ovr", average="macro", labels=range(num_labels))
    )


def compute_metrics(logits: np.ndarray, labels: np.ndarray, split: str) -> EvaluationMetrics:
    """Metrics of `logits` (N, num_labels) against integer `labels` (N,) on the split described by `split`."""
    num_labels = logits.shape[1]
    predictions = logits.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=range(num_labels), average="macro", zero_division=0
    )
    return EvaluationMetrics(
        split=split,
        num_examples=len(labels),
        accuracy=float(accuracy_score(labels, predictions)),
        precision_macro=float(precision),
        recall_macro=float(recall),
        f1_macro=float(f1),
        roc_auc=_roc_auc(labels, softmax(logits.astype(np.float64))),
        confusion_matrix=confusion_matrix(labels, predictions, labels=range(num_labels)).tolist(),
    )
