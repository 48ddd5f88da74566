"""Real photos that ship inside installed packages (scikit-image's sample images, scikit-learn's two sample
photos), and a small ImageFolder built from them for fine-tuning checks.

The folder's classes group whole source photos; each source photo goes entirely to training or entirely to
the held-out folder, so no view of a held-out photo is ever trained on.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from training.errors import DatasetError

# Source photo -> class of the fine-tuning folder. scikit-image's synthetic images (logo, colour wheel,
# chessboard, silhouettes) are left out.
PHOTO_CLASSES = {
    "astronaut": "everyday",
    "camera": "everyday",
    "chelsea": "everyday",
    "clock": "everyday",
    "coffee": "everyday",
    "coins": "everyday",
    "rocket": "everyday",
    "stereo_motorcycle": "everyday",
    "china": "everyday",
    "flower": "everyday",
    "brick": "texture",
    "grass": "texture",
    "gravel": "texture",
    "cell": "micrograph",
    "immunohistochemistry": "micrograph",
    "microaneurysms": "micrograph",
    "retina": "micrograph",
    "hubble_deep_field": "night-sky",
    "moon": "night-sky",
    "page": "document",
    "text": "document",
}
VIEW_SIZE = 256


def sample_photos() -> dict[str, Image.Image]:
    """Every photo of `PHOTO_CLASSES` as an RGB Pillow image, by name; `DatasetError` if a package is
    missing (scikit-image and scikit-learn come with the `train` extra)."""
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError as exc:
        raise DatasetError(f"the sample photos need scikit-image and scikit-learn: {exc}") from None
    bundled = load_sample_images()
    photos = {Path(path).stem: pixels for path, pixels in zip(bundled.filenames, bundled.images, strict=True)}
    for name in PHOTO_CLASSES:
        if name not in photos:
            pixels = getattr(skimage.data, name)()
            photos[name] = pixels[0] if isinstance(pixels, tuple) else pixels  # stereo pairs: the left view
    return {name: Image.fromarray(np.asarray(photos[name])).convert("RGB") for name in PHOTO_CLASSES}


def random_view(photo: Image.Image, rng: random.Random) -> Image.Image:
    """A random crop (15-100% of the area, aspect 3:4 to 4:3) resized to VIEW_SIZE square, flipped half
    the time, with random brightness, contrast and saturation, and greyscale one time in four."""
    width, height = photo.size
    area = width * height * rng.uniform(0.15, 1.0)
    ratio = rng.uniform(3 / 4, 4 / 3)
    crop_w = min(width, round((area * ratio) ** 0.5))
    crop_h = min(height, round((area / ratio) ** 0.5))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    view = photo.resize((VIEW_SIZE, VIEW_SIZE), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        view = enhance(view).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.25:
        view = view.convert("L").convert("RGB")
    return view


def split_sources(seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) source photos: a third of each class's photos (at least one) held out."""
    train, held = [], []
    rng = random.Random(seed)
    for label in sorted(set(PHOTO_CLASSES.values())):
        sources = sorted(name for name, kind in PHOTO_CLASSES.items() if kind == label)
        rng.shuffle(sources)
        count = max(1, len(sources) // 3)
        held += sources[:count]
        train += sources[count:]
    return sorted(train), sorted(held)


def write_photo_folder(root: Path, train_views: int = 60, test_views: int = 24, seed: int = 0) -> dict[str, list[str]]:
    """Write `root/train/<class>/*.jpg` (`train_views` per class) and `root/test/<class>/*.jpg`
    (`test_views` per class), spread evenly over each class's source photos; returns the split of
    source photos. The same arguments write the same files."""
    photos = sample_photos()
    train, held = split_sources(seed)
    rng = random.Random(seed)
    for split, sources, per_class in (("train", train, train_views), ("test", held, test_views)):
        for label in sorted(set(PHOTO_CLASSES.values())):
            names = [name for name in sources if PHOTO_CLASSES[name] == label]
            folder = Path(root) / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                name = names[index % len(names)]
                random_view(photos[name], rng).save(folder / f"{name}-{index:03d}.jpg", quality=90)
    return {"train": train, "test": held}
