"""ImageFolder layout: `<root>/<class name>/<image file>`, one sub-folder per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.data.images import FileImages, ImageDataset, LabelledImages
from training.errors import DatasetError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def _check_image(path: Path) -> None:
    """Read the header (cheap) so that a corrupt or mislabelled file fails before training starts."""
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read image: {exc}") from None


def scan_image_folder(root: Path, class_names: list[str] | None = None) -> tuple[list[str], LabelledImages]:
    """Class names (sorted sub-folder names, or the given ones) and every image file below them.

    With `class_names` given (a test folder), a sub-folder that is not one of them is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: image folder does not exist")
    folders = sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    if class_names is None:
        class_names = [folder.name for folder in folders]
        if len(class_names) < 2:
            raise DatasetError(
                f"{root}: needs one sub-folder per class and at least 2 classes, found {class_names}"
            )
    unknown = [folder.name for folder in folders if folder.name not in class_names]
    if unknown:
        raise DatasetError(
            f"{root}: sub-folders {unknown} are not classes of the training data {class_names}"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for folder in folders:
        files = sorted(
            path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
        )
        if not files:
            raise DatasetError(
                f"{folder}: class folder holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        for path in files:
            _check_image(path)
        paths.extend(files)
        labels.extend([class_names.index(folder.name)] * len(files))
    return class_names, LabelledImages(FileImages(paths), np.asarray(labels, dtype=np.int64))


def load_image_folder(root: Path, test_root: Path | None = None) -> ImageDataset:
    """Training images from `root`; the test set from `test_root` when given, else split off later."""
    class_names, train = scan_image_folder(root)
    test = None
    description = "held-out split"
    if test_root is not None:
        _, test = scan_image_folder(test_root, class_names)
        description = f"{Path(test_root).name} ({len(test)} images)"
    return ImageDataset(
        name=Path(root).name, class_names=class_names, train=train, test=test, test_description=description
    )
