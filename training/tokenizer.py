"""A subword (BPE) tokenizer trained on the training texts, saved as `tokenizer.json` for the server.

Words are marked SentencePiece-style (`▁` before each word) rather than with WordPiece's `##`
continuation prefix: the `tokenizers` trainers assign prefixed tokens in hash-map order, so their
vocabulary changes from run to run (huggingface/tokenizers#1794); this one is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"


def train_bpe(texts: Sequence[str], vocab_size: int, lowercase: bool, min_frequency: int = 2) -> Tokenizer:
    """BERT-style normalisation, splitting on whitespace and punctuation, a BPE vocabulary of at most
    `vocab_size`. `[PAD]` is id 0; encodings are wrapped as `[CLS] ... [SEP]`."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), pre_tokenizers.Metaspace()]
    )
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD, UNK, CLS, SEP],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        special_tokens=[(CLS, tokenizer.token_to_id(CLS)), (SEP, tokenizer.token_to_id(SEP))],
    )
    return tokenizer
