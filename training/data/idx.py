"""MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST...), gzipped or not."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from training.data.images import ArrayImages, ImageDataset, LabelledImages
from training.errors import DatasetError

_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file of unsigned bytes (magic 0x0000080N) as an array of N dimensions."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path}: header promises {shape} = {expected} bytes but {len(raw) - header} follow"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_file(directory: Path, prefix: str, kind: str) -> Path:
    """`<prefix>-<kind>-idx?-ubyte`, with or without `.gz` (`kind` is `images` or `labels`)."""
    ndim = 3 if kind == "images" else 1
    for suffix in ("", ".gz"):
        path = directory / f"{prefix}-{kind}-idx{ndim}-ubyte{suffix}"
        if path.is_file():
            return path
    raise DatasetError(f"{directory}: no {prefix}-{kind}-idx{ndim}-ubyte[.gz] file")


def load_split(directory: Path, prefix: str) -> LabelledImages:
    images_path = find_idx_file(directory, prefix, "images")
    labels_path = find_idx_file(directory, prefix, "labels")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DatasetError(
            f"{images_path}: expected (N, H, W) images and (N,) labels, got {images.shape}, {labels.shape}"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return LabelledImages(ArrayImages(images), labels.astype(np.int64))


def load_idx_dataset(directory: Path, train_prefix: str = "train", test_prefix: str = "t10k") -> ImageDataset:
    """A folder with `train-*` and `t10k-*` IDX files; classes are the label values 0..max."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: IDX data folder does not exist")
    train = load_split(directory, train_prefix)
    test = load_split(directory, test_prefix)
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    return ImageDataset(
        name=directory.name,
        class_names=[str(label) for label in range(num_classes)],
        train=train,
        test=test,
        test_description=f"{directory.name} {test_prefix} ({len(test)} images)",
    )
