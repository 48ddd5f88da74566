"""The bundled default models (`make models`): recipes tuned to train in minutes on a 2-core CPU."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.errors import TrainingError
from training.image_task import run_image
from training.options import CommonOptions, ImageOptions, TextOptions
from training.text_task import run_text


@dataclass(frozen=True)
class Recipe:
    summary: str
    data: str | None  # the folder under --data-dir; None: the recipe needs no dataset
    options: Callable[[Path, Path, int, str], CommonOptions]
    run: Callable[[CommonOptions], Path]
    seed: int = 0


def _mnist_cnn(data: Path, models_dir: Path, seed: int, device: str) -> ImageOptions:
    return ImageOptions(
        name="mnist-cnn",
        description="Handwritten digit classifier (MNIST), compact CNN trained from scratch.",
        models_dir=models_dir,
        version=1,
        overwrite=True,
        idx_dir=data,
        arch="cnn",
        epochs=8,
        batch_size=128,
        learning_rate=3e-3,
        label_smoothing=0.05,
        val_fraction=1 / 12,
        seed=seed,
        device=device,
    )


def _sst2_textcnn(data: Path, models_dir: Path, seed: int, device: str) -> TextOptions:
    return TextOptions(
        name="sst2-textcnn",
        description="English sentence sentiment (SST-2): TextCNN and BPE tokenizer from scratch.",
        default=True,
        models_dir=models_dir,
        version=1,
        overwrite=True,
        train_file=data / "train.tsv",
        eval_file=data / "dev.tsv",
        text_columns=["sentence"],
        label_column="label",
        label_names=["negative", "positive"],
        arch="textcnn",
        max_length=64,
        vocab_size=8000,
        epochs=12,
        batch_size=64,
        learning_rate=2e-3,
        weight_decay=0.05,
        label_smoothing=0.1,
        patience=4,
        val_fraction=0.05,
        seed=seed,
        device=device,
    )


def _efficientnet_imagenet(data: Path, models_dir: Path, seed: int, device: str) -> ImageOptions:
    return ImageOptions(
        name="efficientnet-lite0-imagenet",
        description="ImageNet-1k photo classifier (1,000 classes): EfficientNet-Lite0 with its published "
        "weights, not retrained.",
        default=True,
        models_dir=models_dir,
        version=1,
        overwrite=True,
        arch="efficientnet-lite0",
        pretrained=True,
        max_batch_size=16,
        seed=seed,
        device=device,
    )


DEFAULT_MODELS: dict[str, Recipe] = {
    "mnist-cnn": Recipe("MNIST IDX files in <data-dir>/mnist, test on t10k", "mnist", _mnist_cnn, run_image),
    # Seed 1 over seed 0 by validation accuracy (93.65% vs 93.29%); SST-2 dev: 84.98% vs 81.65%.
    "sst2-textcnn": Recipe(
        "SST-2 train.tsv/dev.tsv in <data-dir>/sst2, test on dev", "sst2", _sst2_textcnn, run_text, seed=1
    ),
    # float32: static INT8 agreed with it on only 14 of the 21 sample photos (chelsea among those lost).
    "efficientnet-lite0-imagenet": Recipe(
        "packaged ImageNet weights, no dataset", None, _efficientnet_imagenet, run_image
    ),
}


def build_default_models(
    models_dir: Path, data_dir: Path, only: list[str] | None, seed: int | None, device: str
) -> list[Path]:
    """Train and publish each default model as version 1; fails before training if a dataset is missing."""
    names = only or list(DEFAULT_MODELS)
    for name in names:
        if DEFAULT_MODELS[name].data is None:
            continue
        folder = Path(data_dir) / DEFAULT_MODELS[name].data
        if not folder.is_dir():
            raise TrainingError(
                f"{folder} not found: the default model {name!r} is trained on the shared dataset there. "
                "Pass --data-dir with the folder that holds mnist/ and sst2/."
            )
    written = []
    for name in names:
        recipe = DEFAULT_MODELS[name]
        print(f"=== {name}: {recipe.summary}", file=sys.stderr)
        options = recipe.options(
            Path(data_dir) / (recipe.data or ""), models_dir, recipe.seed if seed is None else seed, device
        )
        written.append(recipe.run(options))
    return written
