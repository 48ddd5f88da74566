"""Model-quality metrics: what each model version answers (its top-1 label and confidence), beside how it
answered its reference set (model_repository.reference), so that Prometheus can tell how far the live traffic
has drifted from it (the recording rules in monitoring/prometheus/alerts.yml; docs/monitoring.md).

Per model and version:
- `predictions_total{label}`: top-1 labels, counted for the reference's `top_labels` most frequent labels and
  `other` for the rest, so a 1,000-class model makes `top_labels + 1` series, not 1,000;
- `prediction_confidence`: a histogram of the top-1 confidence on the reference's `CONFIDENCE_EDGES`;
- `low_confidence_predictions_total`: answers whose top-1 confidence is below the version's threshold (the
  reference's 5th percentile, or the model's `SERVE_LOW_CONFIDENCE_THRESHOLDS` entry); none without either;
- the reference as gauges: each tracked label's share, the cumulative confidence share at each edge (the same
  `le` as the live histogram), the threshold, the samples, the accuracy, and an info series with the source.

Counters and the histogram add up over worker processes like every other metric (multiprocess mode); the
reference gauges are the same in every process (`livemax`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString

from model_repository.reference import CONFIDENCE_EDGES, ReferenceProfile

NAMESPACE = "modelserver"
OTHER = "other"


def tracked_labels(labels: Sequence[str], reference: ReferenceProfile | None, top_labels: int) -> list[str]:
    """The labels counted by name: the reference's `top_labels` most predicted (ties in the model's label
    order); without a reference, the model's labels when there are at most `top_labels`, else none."""
    if reference is None:
        return list(labels) if len(labels) <= top_labels else []
    order = {label: position for position, label in enumerate(labels)}
    ranked = sorted(labels, key=lambda label: (-reference.label_counts.get(label, 0), order[label]))
    return ranked[:top_labels]


class VersionQuality:
    """One model version's quality series, bound once: `observe` takes a batch's class probabilities."""

    def __init__(self, label_counters: list[Counter], confidence: Histogram, low_confidence: Counter | None,
                 threshold: float | None) -> None:
        self._label_counters = label_counters  # by class index; the untracked classes share `other`'s
        self._confidence = confidence
        self._low_confidence = low_confidence
        self.threshold = threshold

    def observe(self, probabilities: np.ndarray) -> None:
        """Count the top-1 label and confidence of each row of `probabilities` (rows x classes)."""
        top = probabilities.argmax(axis=1)
        confidence = probabilities[np.arange(len(top)), top]
        counters = self._label_counters
        if len(top) == 1:
            counters[int(top[0])].inc()
        else:
            counts = np.bincount(top, minlength=len(counters))
            for index in np.flatnonzero(counts).tolist():
                counters[index].inc(int(counts[index]))
        observe = self._confidence.observe
        for score in confidence.tolist():
            observe(score)
        if self._low_confidence is not None:
            low = int(np.count_nonzero(confidence < self.threshold))
            if low:
                self._low_confidence.inc(low)


class QualityMetrics:
    """The quality metrics of every model version of this process, in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.predictions = Counter(
            "predictions", "Top-1 labels answered, per model version: the reference's most predicted labels "
            "(SERVE_QUALITY_TOP_LABELS) by name, the rest as `other`.",
            ["model", "version", "label"], namespace=NAMESPACE, registry=registry,
        )
        self.confidence = Histogram(
            "prediction_confidence", "Top-1 confidence (probability) of each answer, on the reference's bins.",
            ["model", "version"], buckets=CONFIDENCE_EDGES, namespace=NAMESPACE, registry=registry,
        )
        self.low_confidence = Counter(
            "low_confidence_predictions", "Answers whose top-1 confidence is below the version's low-confidence "
            "threshold (modelserver_low_confidence_threshold).",
            ["model", "version"], namespace=NAMESPACE, registry=registry,
        )
        self.threshold = Gauge(
            "low_confidence_threshold", "The top-1 confidence under which an answer counts as low-confidence: the "
            "reference's 5th percentile, or SERVE_LOW_CONFIDENCE_THRESHOLDS.",
            ["model", "version"], namespace=NAMESPACE, registry=registry, multiprocess_mode="livemax",
        )
        self.reference_label_share = Gauge(
            "reference_label_share", "Share of the reference's predictions per tracked label (and `other`).",
            ["model", "version", "label"], namespace=NAMESPACE, registry=registry, multiprocess_mode="livemax",
        )
        self.reference_confidence_share = Gauge(
            "reference_confidence_share", "Share of the reference's answers with top-1 confidence <= le (the "
            "live histogram's buckets).",
            ["model", "version", "le"], namespace=NAMESPACE, registry=registry, multiprocess_mode="livemax",
        )
        self.reference_samples = Gauge(
            "reference_samples", "Inputs the reference profile was made from.",
            ["model", "version"], namespace=NAMESPACE, registry=registry, multiprocess_mode="livemax",
        )
        self.reference_accuracy = Gauge(
            "reference_accuracy", "Accuracy on the reference inputs (no series when their labels were unknown).",
            ["model", "version"], namespace=NAMESPACE, registry=registry, multiprocess_mode="livemax",
        )
        self.reference_info = Gauge(
            "reference_info", "Where the reference profile of a model version came from (source: held_out, "
            "sample_photos or live_baseline).",
            ["model", "version", "source", "description"], namespace=NAMESPACE, registry=registry,
            multiprocess_mode="livemax",
        )

    def version(self, name: str, version: int, labels: Sequence[str], reference: ReferenceProfile | None,
                top_labels: int, threshold: float | None) -> VersionQuality:
        """Export `reference` (if any) and return the version's live series, each label's created at 0 so that
        a rate over a window sees it from the start. `threshold` overrides the reference's."""
        model_version = (name, str(version))
        tracked = tracked_labels(labels, reference, top_labels)
        other = self.predictions.labels(*model_version, OTHER)
        by_label = {label: self.predictions.labels(*model_version, label) for label in tracked}
        counters = [by_label.get(label, other) for label in labels]
        if threshold is None and reference is not None:
            threshold = reference.low_confidence_threshold
        low_confidence = None
        if threshold is not None:
            low_confidence = self.low_confidence.labels(*model_version)
            self.threshold.labels(*model_version).set(threshold)
        if reference is not None:
            self._export_reference(model_version, tracked, reference)
        return VersionQuality(counters, self.confidence.labels(*model_version), low_confidence, threshold)

    def _export_reference(self, model_version: tuple[str, str], tracked: list[str],
                          reference: ReferenceProfile) -> None:
        shares = reference.label_share()
        for label in tracked:
            self.reference_label_share.labels(*model_version, label).set(shares.get(label, 0.0))
        self.reference_label_share.labels(*model_version, OTHER).set(
            max(0.0, 1.0 - sum(shares.get(label, 0.0) for label in tracked)))
        cumulative = np.cumsum(reference.confidence_counts) / reference.num_samples
        for edge, share in zip(reference.confidence_edges, cumulative.tolist(), strict=True):
            self.reference_confidence_share.labels(*model_version, floatToGoString(edge)).set(share)
        self.reference_samples.labels(*model_version).set(reference.num_samples)
        if reference.accuracy is not None:
            self.reference_accuracy.labels(*model_version).set(reference.accuracy)
        self.reference_info.labels(*model_version, reference.source, reference.description).set(1)
