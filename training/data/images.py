"""Labelled image collections: in-memory arrays or files on disk, both yielding Pillow images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.errors import DatasetError


class ArrayImages:
    """uint8 images held in memory: (N, H, W) grayscale or (N, H, W, 3) RGB."""

    def __init__(self, pixels: np.ndarray) -> None:
        if pixels.dtype != np.uint8 or pixels.ndim not in (3, 4):
            raise ValueError("expected uint8 images shaped (N, H, W) or (N, H, W, 3)")
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> Image.Image:
        return Image.fromarray(self.pixels[index])

    def take(self, indices: Sequence[int]) -> ArrayImages:
        return ArrayImages(self.pixels[np.asarray(indices, dtype=np.int64)])


class FileImages:
    """Image files decoded on access; a file Pillow cannot read raises `DatasetError` naming it."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image.load()
                return image
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read image: {exc}") from None

    def take(self, indices: Sequence[int]) -> FileImages:
        return FileImages([self.paths[i] for i in indices])


ImageSource = ArrayImages | FileImages


@dataclass
class LabelledImages:
    """Images with integer labels indexing the class names of their dataset."""

    images: ImageSource
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Sequence[int]) -> LabelledImages:
        return LabelledImages(self.images.take(indices), self.labels[np.asarray(indices, dtype=np.int64)])


@dataclass
class ImageDataset:
    """A training set and, when the source has one, its own held-out test set."""

    name: str
    class_names: list[str]
    train: LabelledImages
    test: LabelledImages | None
    test_description: str = "test"
