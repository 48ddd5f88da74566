"""Pydantic schema of `models/<name>/<version>/config.json`: everything the server needs to serve a model.

The server guesses nothing: tensor names and dtypes, label order, preprocessing and batching limits all
come from this file, and `sha256` pins the ONNX file it describes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1

TensorDType = Literal["float32", "float16", "int64", "int32", "bool"]

# Input tensor names a text model uses; the server feeds those the ONNX graph declares.
TEXT_INPUT_IDS = "input_ids"
TEXT_ATTENTION_MASK = "attention_mask"
TEXT_TOKEN_TYPE_IDS = "token_type_ids"
TEXT_INPUT_NAMES = (TEXT_INPUT_IDS, TEXT_ATTENTION_MASK, TEXT_TOKEN_TYPE_IDS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One input or output tensor of the ONNX graph. Symbolic (dynamic) dimensions are strings."""

    name: str
    dtype: TensorDType
    shape: list[int | str] = Field(description='e.g. ["batch", 1, 28, 28] or ["batch", "sequence"]')


class ImagePreprocessing(_Strict):
    """How an uploaded image becomes the model's float tensor (NCHW).

    Steps: decode, convert to `color_mode`, resize (shorter side to `resize`, or straight to
    `height`x`width` when `resize` is None), center-crop to `height`x`width`, scale to [0, 1],
    then normalise per channel with `mean` and `std`.
    """

    type: Literal["image"] = "image"
    color_mode: Literal["L", "RGB"]
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    resize: int | None = Field(default=None, gt=0)
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    mean: list[float]
    std: list[float]

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "L" else 3

    @model_validator(mode="after")
    def _check_channels(self) -> ImagePreprocessing:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need {self.channels} values for color_mode {self.color_mode}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        if self.resize is not None and self.resize < min(self.height, self.width):
            raise ValueError("resize must be at least the crop size")
        return self


class TextPreprocessing(_Strict):
    """How text becomes token tensors: a Hugging Face `tokenizers` file next to the ONNX file.

    Batches are padded to their longest sequence (never beyond `max_length`) with `pad_token_id`.
    """

    type: Literal["text"] = "text"
    tokenizer_file: str = "tokenizer.json"
    max_length: int = Field(gt=0)
    lowercase: bool = False
    padding_side: Literal["right", "left"] = "right"
    pad_token_id: int = Field(ge=0)


class EvaluationMetrics(_Strict):
    """Held-out evaluation written by `training/` (also saved as metrics.json)."""

    split: str = Field(description="what the metrics were computed on, e.g. 'mnist test (10,000 images)'")
    num_examples: int = Field(ge=0)
    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    roc_auc: float | None = Field(description="one-vs-rest macro average when multiclass")
    confusion_matrix: list[list[int]]


Preprocessing = Annotated[ImagePreprocessing | TextPreprocessing, Field(discriminator="type")]


class ModelConfig(_Strict):
    """Everything the server needs to load, feed and interpret one model version."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    version: int = Field(ge=1)
    task: Literal["image", "text"]
    description: str = ""
    default: bool = Field(
        default=False,
        description="answer the requests of this task that name no model, when several models of the task are "
        "served (SERVE_DEFAULT_MODELS wins over it)",
    )
    onnx_file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1, description="the first output holds one score per label")
    output_type: Literal["logits", "probabilities"] = "logits"
    labels: list[str] = Field(min_length=2)
    preprocessing: Preprocessing
    max_batch_size: int = Field(default=32, ge=1)
    metrics: EvaluationMetrics | None = None
    training: dict[str, Any] = Field(default_factory=dict, description="provenance: data, architecture, seed")

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        if self.preprocessing.type != self.task:
            raise ValueError(f"task {self.task!r} needs {self.task} preprocessing, got {self.preprocessing.type}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        scores_dim = self.outputs[0].shape[-1] if self.outputs[0].shape else None
        if isinstance(scores_dim, int) and scores_dim != len(self.labels):
            raise ValueError(f"output {self.outputs[0].name!r} has {scores_dim} scores but {len(self.labels)} labels")
        if self.task == "text":
            unknown = {spec.name for spec in self.inputs} - set(TEXT_INPUT_NAMES)
            if unknown or TEXT_INPUT_IDS not in {spec.name for spec in self.inputs}:
                raise ValueError(f"text model inputs must include {TEXT_INPUT_IDS!r} and only {TEXT_INPUT_NAMES}")
        elif len(self.inputs) != 1:
            raise ValueError("an image model takes exactly one input tensor")
        return self
