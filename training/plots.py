"""PNG reports: loss/accuracy curves and the confusion matrix (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from training.loop import EpochRecord


def plot_training_curves(history: list[EpochRecord], path: Path, best_epoch: int) -> None:
    """Training and validation loss (left) and accuracy (right) per epoch; the kept epoch is marked."""
    epochs = [record.epoch for record in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [r.train_loss for r in history], "o-", label="train")
    loss_axis.plot(epochs, [r.val_loss for r in history], "o-", label="validation")
    loss_axis.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    accuracy_axis.plot(epochs, [r.train_accuracy for r in history], "o-", label="train")
    accuracy_axis.plot(epochs, [r.val_accuracy for r in history], "o-", label="validation")
    accuracy_axis.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.axvline(best_epoch, color="grey", linestyle=":", label=f"kept (epoch {best_epoch})")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    """Counts per (true, predicted) pair, darker for larger counts."""
    counts = np.asarray(matrix)
    size = max(4.0, 0.6 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    ticks = range(len(labels))
    axis.set_xticks(ticks, labels, rotation=45, ha="right")
    axis.set_yticks(ticks, labels)
    axis.set(title=title, xlabel="predicted", ylabel="true")
    if len(labels) <= 20:
        threshold = counts.max() / 2
        for (row, column), count in np.ndenumerate(counts):
            colour = "white" if count > threshold else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
