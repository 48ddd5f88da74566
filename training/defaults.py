"""The bundled default models (`make models`): recipes tuned to train in minutes on a 2-core CPU, and the
data each one's reference profile is computed on (`python -m training reference`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model_repository import ModelConfig, ModelRepositoryError, load_config
from model_repository.reference import write_reference
from training.errors import TrainingError
from training.export import open_session
from training.image_task import held_out_reference_set as image_held_out
from training.image_task import run_image
from training.options import CommonOptions, ImageOptions, TextOptions
from training.reference import ReferenceSet, reference_profile, sample_photo_set
from training.text_task import held_out_reference_set as text_held_out
from training.text_task import run_text


@dataclass(frozen=True)
class Recipe:
    summary: str
    data: str | None  # the folder under --data-dir; None: the recipe needs no dataset
    options: Callable[[Path, Path, int, str], CommonOptions]
    run: Callable[[CommonOptions], Path]
    reference_set: Callable[[CommonOptions, ModelConfig, Path], ReferenceSet]  # (options, config, version dir)
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


def _image_held_out(options: ImageOptions, config: ModelConfig, directory: Path) -> ReferenceSet:
    return image_held_out(options, config.preprocessing)


def _text_held_out(options: TextOptions, config: ModelConfig, directory: Path) -> ReferenceSet:
    return text_held_out(options, config.preprocessing, directory / config.preprocessing.tokenizer_file)


def _photos(options: ImageOptions, config: ModelConfig, directory: Path) -> ReferenceSet:
    return sample_photo_set(config.preprocessing)


DEFAULT_MODELS: dict[str, Recipe] = {
    "mnist-cnn": Recipe(
        "MNIST IDX files in <data-dir>/mnist, test on t10k", "mnist", _mnist_cnn, run_image, _image_held_out
    ),
    # Seed 1 over seed 0 by validation accuracy (93.65% vs 93.29%); SST-2 dev: 84.98% vs 81.65%.
    "sst2-textcnn": Recipe(
        "SST-2 train.tsv/dev.tsv in <data-dir>/sst2, test on dev",
        "sst2",
        _sst2_textcnn,
        run_text,
        _text_held_out,
        seed=1,
    ),
    # float32: static INT8 agreed with it on only 14 of the 21 sample photos (chelsea among those lost).
    "efficientnet-lite0-imagenet": Recipe(
        "packaged ImageNet weights, no dataset", None, _efficientnet_imagenet, run_image, _photos
    ),
}


def _check_data(name: str, data_dir: Path, use: str) -> None:
    if DEFAULT_MODELS[name].data is None:
        return
    folder = Path(data_dir) / DEFAULT_MODELS[name].data
    if not folder.is_dir():
        raise TrainingError(
            f"{folder} not found: the default model {name!r} is {use} the shared dataset there. "
            "Pass --data-dir with the folder that holds mnist/ and sst2/."
        )


def write_bundled_reference(directory: Path, data_dir: Path) -> Path:
    """Compute and write `<directory>/reference.json` for a published version of a bundled model, on the
    data its recipe holds out, as training writes it at export; nothing is retrained."""
    try:
        config = load_config(directory)
    except ModelRepositoryError as exc:
        raise TrainingError(str(exc)) from None
    recipe = DEFAULT_MODELS.get(config.name)
    if recipe is None:
        raise TrainingError(
            f"{directory}: {config.name!r} is not a bundled model ({', '.join(DEFAULT_MODELS)}); the versions "
            "that training publishes carry their reference.json already"
        )
    _check_data(config.name, data_dir, "measured on")
    options = recipe.options(Path(data_dir) / (recipe.data or ""), Path(directory).parent.parent, recipe.seed, "cpu")
    reference_set = recipe.reference_set(options, config, Path(directory))
    session = open_session(Path(directory) / config.onnx_file)
    return write_reference(directory, reference_profile(session, reference_set, config.labels, config.output_type))


def build_default_models(
    models_dir: Path, data_dir: Path, only: list[str] | None, seed: int | None, device: str
) -> list[Path]:
    """Train and publish each default model as version 1; fails before training if a dataset is missing."""
    names = only or list(DEFAULT_MODELS)
    for name in names:
        _check_data(name, data_dir, "trained on")
    written = []
    for name in names:
        recipe = DEFAULT_MODELS[name]
        print(f"=== {name}: {recipe.summary}", file=sys.stderr)
        options = recipe.options(
            Path(data_dir) / (recipe.data or ""), models_dir, recipe.seed if seed is None else seed, device
        )
        written.append(recipe.run(options))
    return written
