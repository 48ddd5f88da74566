"""Run options shared by the command line, the default-model recipes and tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(kw_only=True)
class CommonOptions:
    """Options of every training run; `None` means "the architecture's default"."""

    name: str
    models_dir: Path = Path("models")
    version: int | None = None
    overwrite: bool = False
    description: str = ""
    default: bool = False
    label_names: list[str] | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.0
    patience: int = 3
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    max_train_samples: int | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    amp: bool = False
    quantize: bool = False
    fp16: bool = False
    max_quantization_drop: float = 0.01
    max_batch_size: int = 64


@dataclass(kw_only=True)
class ImageOptions(CommonOptions):
    """Image classifier: one data source (none with `pretrained`: the ImageNet classifier as published), an
    architecture, its initial weights and the input preprocessing."""

    idx_dir: Path | None = None
    image_folder: Path | None = None
    test_folder: Path | None = None
    offline: str | None = None
    arch: str = "cnn"
    pretrained: bool = False
    freeze_epochs: int = 0
    image_size: int | None = None
    color_mode: str | None = None
    resize: int | None = None
    interpolation: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    augment: str = "auto"
    cnn_widths: list[int] | None = None
    resnet_blocks: list[int] | None = None
    resnet_width: int = 64


@dataclass(kw_only=True)
class TextOptions(CommonOptions):
    """Text classifier: the data files and columns, an architecture and the tokenization."""

    train_file: Path
    eval_file: Path | None = None
    table_format: str = "auto"
    header: bool = True
    text_columns: list[str] | None = None
    label_column: str = "label"
    arch: str = "textcnn"
    max_length: int = 128
    lowercase: bool = True
    vocab_size: int = 8000
    embedding_dim: int = 128
    filters: int = 128
    kernel_sizes: list[int] | None = None
    dropout: float = 0.5
    pretrained: Path | None = None
