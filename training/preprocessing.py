"""Inputs exactly as the server builds them, so evaluation and export checks see what production sees.

Images go through `model_repository.image_transform.image_to_array`, the function the server calls.
Text follows the server's recipe: optional lowercasing, the `tokenizers` file with truncation to
`max_length` and special tokens, then each batch padded to its longest row with `pad_token_id`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from tokenizers import Tokenizer

from model_repository import ImagePreprocessing, TextPreprocessing
from model_repository.image_transform import image_to_array
from model_repository.schema import TEXT_ATTENTION_MASK, TEXT_INPUT_IDS


def prepare_tokenizer(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """Set the tokenizer up as the server does: truncation to `max_length`, no built-in padding."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def tokenize(tokenizer: Tokenizer, texts: Sequence[str], spec: TextPreprocessing) -> list[list[int]]:
    """Token ids per text, special tokens included, truncated to `spec.max_length`."""
    if spec.lowercase:
        texts = [text.lower() for text in texts]
    return [encoding.ids for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=True)]


def pad_rows(rows: Sequence[Sequence[int]], spec: TextPreprocessing) -> dict[str, np.ndarray]:
    """Pad rows to the longest one on `spec.padding_side`; attention_mask is 1 for tokens, 0 for padding."""
    length = max(len(row) for row in rows)
    input_ids = np.full((len(rows), length), spec.pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), length), dtype=np.int64)
    for index, row in enumerate(rows):
        span = slice(0, len(row)) if spec.padding_side == "right" else slice(length - len(row), length)
        input_ids[index, span] = row
        attention_mask[index, span] = 1
    return {TEXT_INPUT_IDS: input_ids, TEXT_ATTENTION_MASK: attention_mask}


def encode_texts(
    tokenizer: Tokenizer, texts: Sequence[str], spec: TextPreprocessing
) -> dict[str, np.ndarray]:
    """One padded batch, as the server would feed it to the model."""
    return pad_rows(tokenize(tokenizer, texts, spec), spec)


def estimate_mean_std(
    images: Sequence[Image.Image], spec: ImagePreprocessing
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of images after conversion, resizing and cropping (before normalisation)."""
    channels = spec.channels
    raw = spec.model_copy(update={"mean": [0.0] * channels, "std": [1.0] * channels})
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for image in images:
        pixels = image_to_array(image, raw).reshape(channels, -1).astype(np.float64)
        total += pixels.sum(axis=1)
        total_sq += (pixels**2).sum(axis=1)
        count += pixels.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]
