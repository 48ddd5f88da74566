"""Request and response bodies of the service's own API (the v2 protocol has its own in `app/transport/http/v2_codec.py`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.models.default_models import ChosenBy, Task

MAX_TOP_K = 1000  # labels one answer may hold


class PredictRequest(BaseModel):
    """JSON body of `POST /predict`: text, or base64-encoded images; one item or a list."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "a gripping, beautifully acted film"},
                {"text": ["loved it", "a tedious mess"], "model": "sst2-textcnn", "top_k": 2},
                {"image": "<base64 of a PNG or JPEG file>", "model": "mnist-cnn"},
            ]
        },
    )

    model: str | None = Field(default=None, description="model name; without it, the default model of the input's kind answers")
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K, description="how many labels to return, best first")
    text: str | list[str] | None = Field(default=None, description="a text, or a list of texts")
    image: str | list[str] | None = Field(default=None, description="a base64 image (or data: URL), or a list")

    @model_validator(mode="after")
    def _exactly_one_input(self) -> PredictRequest:
        if (self.text is None) == (self.image is None):
            raise ValueError("give exactly one of `text` or `image`")
        return self


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="probability of this label")


class Prediction(BaseModel):
    label: str = Field(description="the most probable label")
    score: float = Field(description="its probability")
    top_k: list[LabelScore] = Field(description="the `top_k` most probable labels, best first")


class PredictResponse(Prediction):
    """The answer for one text or image."""

    model: str
    version: int


class BatchPredictResponse(BaseModel):
    """The answer for a list of texts or several images, in request order."""

    model: str
    version: int
    predictions: list[Prediction]


class ModelStatus(BaseModel):
    name: str
    version: int | None
    task: Literal["image", "text"] | None
    state: Literal["loading", "warming", "ready", "failed", "draining"]
    provider: str | None = Field(description="the ONNX Runtime execution provider the session really runs on")
    error: str | None


class DefaultModelStatus(BaseModel):
    """The model that answers the requests of one input kind that name no model."""

    model: str
    chosen_by: ChosenBy
    loaded: bool = Field(description="false once unloaded through the repository API: requests of the kind that "
                         "name no model then get 404 until it is loaded again")


DefaultModels = dict[Task, DefaultModelStatus]


class WorkerStatus(BaseModel):
    pid: int
    ready: bool


class HealthResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    live: bool
    ready: bool
    models: list[ModelStatus]  # as the worker process that answered sees them
    default_models: DefaultModels = Field(description="per input kind, the model that answers /predict requests "
                                          "that name none; a kind with several models and no default is absent")
    workers: list[WorkerStatus] | None = None  # every live worker process, when SERVE_WORKERS > 1
    inference_process: WorkerStatus | None = None  # with SERVE_SHARED_INFERENCE, while one is up


class BatchTimingDescription(BaseModel):
    batch_size: int
    ms_per_batch: float
    items_per_s: float


class ReferenceDescription(BaseModel):
    """Where a model version's quality baseline (reference.json) came from; docs/monitoring.md."""

    source: Literal["held_out", "sample_photos", "live_baseline"]
    description: str
    num_samples: int
    accuracy: float | None = Field(description="on the reference inputs; null when their labels were unknown")


class ModelDescription(ModelStatus):
    default: bool = Field(description="whether it answers the /predict requests of its kind that name no model")
    labels: list[str]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    preprocessing: dict[str, Any]
    max_batch_size: int = Field(description="the most rows in one batch: for tensor and image models the "
                                "measured best size when SERVE_BATCH_SIZE_SEARCH is on, else the configured maximum")
    max_padded_tokens: int | None = Field(
        default=None, description="text models: the cap on rows x longest tokens per batch, from the measured "
        "best size at full length; shorter texts batch more rows, up to max_batch_size")
    max_padding: float | None = Field(
        default=None, description="text models on the CPU: a text joins a batch only while the batch's padding "
        "stays within this fraction of its texts' real length, so mixed lengths run as batches of like lengths")
    configured_max_batch_size: int = Field(description="config.json's max_batch_size, capped by SERVE_MAX_BATCH_SIZE")
    intra_op_threads: int = Field(
        description="ONNX Runtime's threads per inference: SERVE_INTRA_OP_THREADS, else this worker's share of the "
        "CPUs, or all of them where a batch of one measured faster so (several workers on the CPU)")
    batch_size_curve: list[BatchTimingDescription] = Field(
        description="the warm-up timings behind max_batch_size (the fastest run of each size)")
    metrics: dict[str, Any] | None
    reference: ReferenceDescription | None = Field(
        description="the version's reference profile, which the quality metrics compare live answers with; null "
        "without one (or when it cannot be used: see reference_error)")
    reference_error: str | None = Field(description="why the version's reference.json is not used, if it is not")
    low_confidence_threshold: float | None = Field(
        description="the top-1 confidence under which an answer counts as low-confidence: the reference's 5th "
        "percentile, or SERVE_LOW_CONFIDENCE_THRESHOLDS; null with neither")


class ModelsResponse(BaseModel):
    models: list[ModelDescription]
    default_models: DefaultModels
