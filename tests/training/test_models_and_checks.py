"""Preprocessing, architectures, and the export checks failing when they should."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from training_support import NEGATIVE, POSITIVE

from model_repository import ImagePreprocessing, TextPreprocessing
from model_repository.image_transform import image_to_array
from training.augment import random_affine, train_transform
from training.errors import ExportError
from training.export import check_onnx_file, check_parity, export_onnx, open_session
from training.models.cnn import SmallCNN
from training.models.resnet import ResNet
from training.models.text_cnn import TextCNN
from training.preprocessing import encode_texts, pad_rows, prepare_tokenizer
from training.text_task import padding_check
from training.tokenizer import train_bpe

SPEC = TextPreprocessing(max_length=8, pad_token_id=0)


def test_pad_rows_right_and_left() -> None:
    right = pad_rows([[5, 6, 7], [8]], SPEC)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    left = pad_rows([[5, 6, 7], [8]], SPEC.model_copy(update={"padding_side": "left", "pad_token_id": 9}))
    assert left["input_ids"].tolist() == [[5, 6, 7], [9, 9, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_bpe_tokenizer_is_reproducible_and_truncates_with_special_tokens() -> None:
    texts = POSITIVE + NEGATIVE
    tokenizer = prepare_tokenizer(train_bpe(texts, vocab_size=300, lowercase=True), 6)
    assert all(train_bpe(texts, 300, True).get_vocab() == tokenizer.get_vocab() for _ in range(3))
    batch = encode_texts(tokenizer, ["THE film", "one of the best movies i have seen this year"], SPEC)
    assert tokenizer.token_to_id("[PAD]") == 0
    assert batch["input_ids"].shape == (2, 6)
    assert [tokenizer.id_to_token(int(i)) for i in batch["input_ids"][0]] == [
        "[CLS]",
        "\u2581the",
        "\u2581film",
        "[SEP]",
        "[PAD]",
        "[PAD]",
    ]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
    assert batch["input_ids"][1, -1] == tokenizer.token_to_id("[SEP]")


def test_affine_augmentation_moves_the_digit_and_keeps_the_format() -> None:
    image = Image.fromarray(np.pad(np.full((8, 8), 255, np.uint8), 10))
    assert np.array_equal(np.asarray(random_affine(image, 0, 0, (1, 1))), np.asarray(image))
    random.seed(0)
    moved = [np.asarray(random_affine(image)) for _ in range(5)]
    assert any(not np.array_equal(m, np.asarray(image)) for m in moved)
    spec = ImagePreprocessing(color_mode="L", height=28, width=28, mean=[0.1307], std=[0.3081])
    pixels = train_transform(spec, "affine")(image)
    assert pixels.shape == (1, 28, 28) and pixels.dtype == np.float32
    photo = ImagePreprocessing(
        color_mode="RGB", height=24, width=24, resize=28, mean=[0.5] * 3, std=[0.2] * 3
    )
    assert train_transform(photo, "crop-flip")(Image.new("RGB", (60, 40))).shape == (3, 24, 24)
    assert image_to_array(Image.new("RGB", (60, 40)), photo).shape == (3, 24, 24)


def test_cnn_and_resnet_output_one_score_per_label() -> None:
    assert SmallCNN(1, 10)(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert ResNet(3, 4, blocks=(1, 1), width=8)(torch.randn(3, 3, 32, 32)).shape == (3, 4)


@pytest.mark.parametrize("side", ["right", "left"])
def test_text_cnn_ignores_padding(side: str) -> None:
    torch.manual_seed(0)
    model = TextCNN(vocab_size=50, num_labels=3, pad_token_id=0, embedding_dim=16, filters=8).eval()
    spec = SPEC.model_copy(update={"padding_side": side, "max_length": 64})
    short, long = [2, 11, 12, 3], [2, *range(20, 40), 3]
    alone = pad_rows([short], spec)
    padded = pad_rows([short, long], spec)
    with torch.no_grad():
        a = model(**{k: torch.from_numpy(v) for k, v in alone.items()})[0]
        b = model(**{k: torch.from_numpy(v) for k, v in padded.items()})[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_text_cnn_computes_zero_padded_convolutions() -> None:
    torch.manual_seed(0)
    model = TextCNN(
        vocab_size=50, num_labels=2, pad_token_id=0, embedding_dim=6, filters=4, kernel_sizes=(2, 5)
    ).eval()
    input_ids = torch.tensor([[2, 7, 8, 9, 3]])
    tokens = model.embedding(input_ids).transpose(1, 2)
    pooled = []
    for conv in model.convs:
        size = conv.kernel_size[0]
        pooled.append(torch.relu(conv(F.pad(tokens, ((size - 1) // 2, size // 2))).amax(dim=2)))
    expected = model.head(torch.cat(pooled, dim=1))
    with torch.no_grad():
        assert torch.allclose(model(input_ids, torch.ones_like(input_ids)), expected, atol=1e-6)


class MeanPoolText(nn.Module):
    """Averages embeddings over every position, padding included: its output depends on padding."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 4, padding_idx=0)
        self.head = nn.Linear(4, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(input_ids).mean(dim=1) + 0 * attention_mask.sum())


TEXT_AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}


def test_padding_check_catches_a_padding_dependent_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MeanPoolText().eval()
    example = {k: torch.from_numpy(v) for k, v in pad_rows([[2, 5, 6, 7, 3], [2, 3]], SPEC).items()}
    export_onnx(model, example, TEXT_AXES, tmp_path / "model.onnx")
    check_onnx_file(tmp_path / "model.onnx", ["input_ids", "attention_mask"], TEXT_AXES)
    check = padding_check([[2, 5, 6, 3], [2, 5, 6, 7, 8, 9, 3]], SPEC)
    with pytest.raises(
        ExportError, match=r"output depends on padding: a 4-token text alone and padded to 7 tokens"
    ):
        check(open_session(tmp_path / "model.onnx"))


def test_parity_check_catches_a_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SmallCNN(1, 10, widths=(4, 8, 8)).eval()
    axes = {"pixel_values": {0: "batch"}}
    export_onnx(model, {"pixel_values": torch.randn(2, 1, 28, 28)}, axes, tmp_path / "model.onnx")
    check_onnx_file(tmp_path / "model.onnx", ["pixel_values"], axes)
    session = open_session(tmp_path / "model.onnx")
    batches = [
        {"pixel_values": np.random.default_rng(n).normal(size=(n, 1, 28, 28)).astype(np.float32)}
        for n in (1, 3, 8)
    ]
    assert check_parity(session, model, batches) < 1e-4
    with torch.no_grad():
        model.head[1].bias += 1e-3
    with pytest.raises(ExportError, match=r"ONNX Runtime and PyTorch disagree by 1\.0\de-03 \(> 1e-04\)"):
        check_parity(session, model, batches)
    with pytest.raises(ExportError, match=r"graph inputs \['pixel_values'\], expected \['images'\]"):
        check_onnx_file(tmp_path / "model.onnx", ["images"], {})
