"""Text to token rows with a Hugging Face `tokenizers` file, as the model config describes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from model_repository.schema import (
    TEXT_ATTENTION_MASK,
    TEXT_INPUT_IDS,
    TEXT_TOKEN_TYPE_IDS,
    TextPreprocessing,
)


class TextEncoder:
    """Tokenizes texts in one batched call into unpadded rows of the model's text inputs."""

    def __init__(self, spec: TextPreprocessing, directory: Path, input_names: list[str]) -> None:
        self.spec = spec
        self.input_names = input_names
        self.tokenizer = Tokenizer.from_file(str(directory / spec.tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=spec.max_length)

    def encode(self, texts: list[str]) -> list[dict[str, np.ndarray]]:
        """One row per text: token ids, attention mask (and token type ids when the model takes them)."""
        if self.spec.lowercase:
            texts = [text.lower() for text in texts]
        try:
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        except TypeError:  # a lone surrogate ("\ud800", which JSON escapes can carry) is not valid UTF-8
            texts = [_valid_utf8(text) for text in texts]
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        rows = []
        for encoding in encodings:
            ids = np.asarray(encoding.ids, dtype=np.int64)
            row = {TEXT_INPUT_IDS: ids}
            if TEXT_ATTENTION_MASK in self.input_names:
                row[TEXT_ATTENTION_MASK] = np.ones_like(ids)
            if TEXT_TOKEN_TYPE_IDS in self.input_names:
                row[TEXT_TOKEN_TYPE_IDS] = np.asarray(encoding.type_ids, dtype=np.int64)
            rows.append(row)
        return rows


def _valid_utf8(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, the replacement character."""
    return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in text)
