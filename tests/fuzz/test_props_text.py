"""Property tests of text encoding: any unicode becomes token rows within `max_length`, batch or not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.models.text_encoding import TextEncoder
from model_repository.schema import TEXT_ATTENTION_MASK, TEXT_INPUT_IDS
from tests.serving.support import ModelUnderTest

# Every code point, lone surrogates included (JSON's "\ud800" escapes can carry them).
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=300) | st.sampled_from(
    ["", " ", "\u200b", "\x00", "\ud800", "a\udfffb", "İ" * 200, "\u0301" * 50, "ﷺ" * 100, "😀" * 100]
)


@pytest.fixture(scope="module")
def encoder(text_model: ModelUnderTest) -> TextEncoder:
    names = [spec.name for spec in text_model.config.inputs]
    return TextEncoder(text_model.config.preprocessing, text_model.directory, names)


def check_rows(encoder: TextEncoder, texts: list[str], rows: list[dict[str, np.ndarray]]) -> None:
    spec = encoder.spec
    vocabulary = encoder.tokenizer.get_vocab_size()
    assert len(rows) == len(texts)
    for row in rows:
        ids = row[TEXT_INPUT_IDS]
        assert ids.dtype == np.int64 and ids.ndim == 1
        assert 1 <= len(ids) <= spec.max_length
        assert ids.min() >= 0 and ids.max() < vocabulary
        if TEXT_ATTENTION_MASK in encoder.input_names:
            mask = row[TEXT_ATTENTION_MASK]
            assert mask.dtype == np.int64 and mask.shape == ids.shape and (mask == 1).all()


@given(st.lists(ANY_TEXT, min_size=1, max_size=8))
@example(["\ud800 hi", "fine"])
def test_any_unicode_becomes_rows_within_max_length(encoder: TextEncoder, texts: list[str]) -> None:
    check_rows(encoder, texts, encoder.encode(texts))


@given(st.lists(ANY_TEXT, min_size=2, max_size=6))
def test_a_text_encodes_the_same_alone_and_in_a_batch(encoder: TextEncoder, texts: list[str]) -> None:
    """Batch-mates never change a text's tokens (the answer must not depend on who else was queued)."""
    together = encoder.encode(texts)
    for text, row in zip(texts, together, strict=True):
        (alone,) = encoder.encode([text])
        for name, array in alone.items():
            np.testing.assert_array_equal(row[name], array)
