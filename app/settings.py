"""Service settings, read from environment variables prefixed with `SERVE_` (or a `.env` file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service. Each field is set by `SERVE_<FIELD NAME IN CAPITALS>`.

    Over 150 lines because it is one field per knob, each with the description the README's table repeats;
    the service keeps one settings object rather than one per package."""

    model_config = SettingsConfigDict(env_prefix="SERVE_", env_file=".env", extra="ignore")

    # Where and what to serve.
    models_dir: Path = Field(default=Path("models"), description="the model repository to load")
    models: str = Field(
        default="",
        description="comma-separated models to serve, each `name` or `name:version`; "
        "empty serves the latest version of every model in models_dir",
    )
    default_models: str = Field(
        default="",
        description="the model that answers /predict requests naming none, per input kind: `image=NAME,text=NAME`; "
        "wins over `\"default\": true` in config.json; a kind left out keeps that, or its only model",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="serve the Open Inference Protocol v2 over gRPC on this port too (8001 beside HTTP's 8000, as "
        "Triton and KServe do); unset or empty: no gRPC",
    )

    # ONNX Runtime.
    providers: str = Field(
        default="auto",
        description="`auto` (CUDA when usable, else CPU), `cpu`, `cuda`, or a comma-separated list "
        "of ONNX Runtime provider names in order of preference",
    )
    provider_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='JSON object of provider name to options, e.g. {"CUDAExecutionProvider": {"device_id": 0}}',
    )
    intra_op_threads: int = Field(
        default=0, ge=0,
        description="threads per inference; 0: one per CPU the process may use (affinity and cgroup CPU quota), "
        "divided among the workers",
    )
    inter_op_threads: int = Field(default=0, ge=0)
    intra_op_spinning: bool = Field(
        default=False,
        description="let ONNX Runtime's threads spin-wait for work between runs; off, they leave the cores to "
        "the event loop (on 2 cores: 20-45% less server CPU per request)",
    )
    warmup_runs: int = Field(default=1, ge=0, description="warm-up inferences per input shape before ready")

    # Dynamic batching and overload protection.
    max_batch_size: int = Field(default=0, ge=0, description="cap on every model's batch size; 0 keeps each config's")
    batch_size_search: bool = Field(
        default=True,
        description="time batch sizes 1, 2, 4, ... at warm-up and cap batches past which items/s drop",
    )
    max_batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="how long a batch may wait for more requests when the model is idle; 0 runs at once",
    )
    max_queue_size: int = Field(default=512, ge=1, description="requests waiting per model before 503")
    request_timeout_s: float = Field(default=30.0, gt=0, description="deadline from arrival to answer")
    overload_wait_s: float = Field(
        default=0.5,
        gt=0,
        description="a model request that waited unread longer than this (the process is behind) gets 503 at once",
    )

    # Request limits.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_items_per_request: int = Field(default=256, ge=1, description="texts or images in one request")
    max_text_chars: int = Field(default=20_000, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1, description="larger images are refused (413)")
    default_top_k: int = Field(default=5, ge=1)

    # Model-quality monitoring (docs/monitoring.md).
    quality_top_labels: int = Field(
        default=10, ge=1, le=100,
        description="labels counted by name in modelserver_predictions_total, per model version: the reference's "
        "most predicted; the others count as `other`",
    )
    low_confidence_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description='JSON object of model name to the top-1 confidence under which an answer counts as '
        'low-confidence, e.g. {"mnist-cnn": 0.6}; a model left out takes its reference\'s 5th percentile',
    )

    # Access.
    api_key: SecretStr | None = Field(
        default=None, description="when set, /predict, /models and /v2 model routes need it (X-API-Key or Bearer)"
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="comma-separated keys accepted as well as api_key, all at once; with api_key, each of role "
        "admin (ids env-1, env-2, ...): keep them for existing deployments, move to api_keys_file",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="TOML keys file (`[[key]]` id, sha256, role infer|admin, optional models), used with "
        "api_key(s); re-read within about a second of a change, a malformed one keeps the previous keys "
        "(README, Security)",
    )
    public_health: bool = Field(default=True, description="health routes answer without a key; false: they need one")
    public_metrics: bool = Field(default=True, description="/metrics answers without a key; false: it needs one")
    api_docs: bool = Field(
        default=True, description="/docs, /redoc, /openapi.json and their assets; false: all of them answer 404"
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) to serve HTTPS with, read at start-up; needs tls_key_file. Unset: "
        "plain HTTP (TLS at the ingress or proxy)",
    )
    tls_key_file: Path | None = Field(default=None, description="the PEM private key of tls_cert_file")

    # Start-up, logging and shutdown.
    strict_startup: bool = Field(
        default=False,
        description="a model that cannot be loaded fails start-up (the process exits) instead of being "
        "reported as failed while the others serve",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["text", "json"] = Field(default="text", description="`json`: one JSON object per line")
    access_log: bool = Field(default=False, description="uvicorn's access log (costs about 40% throughput)")
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default=1,
        description="server processes on the one port, each with its own sessions and batchers and 1/N of "
        "the CPUs; `auto`: one per usable CPU (at most 8), or one where the sessions ask for CUDA "
        "(app.topology.worker_count, resolved once by `python -m app`). More pay under load (docs/benchmarks.md); 1 stays the default because a "
        "repository load or unload reaches one worker only and each worker holds its own copy of the models "
        "(README, Several worker processes)",
    )
    shared_inference: bool = Field(
        default=False,
        description="the workers read, decode, tokenize and batch requests, and their batches run in one "
        "inference process that holds every session and merges the batches of all workers (one CUDA context "
        "and one copy of each model); `python -m app` starts it",
    )
    graceful_shutdown_s: int = Field(default=30, ge=0, description="time to finish in-flight work on SIGTERM")
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024,
        description="request line and headers larger than this (or with over 100 fields) are refused with 431 "
        "before the app reads them",
    )
    shutdown_delay_s: float = Field(
        default=0.0, ge=0,
        description="on SIGTERM, how long the socket stays open with /health/ready and new requests answering "
        "503 while queued ones finish, before the graceful shutdown; set it to the time a load balancer that "
        "polls /health/ready takes to stop sending, where nothing takes the server out of rotation first "
        "(Kubernetes does: the preStop sleep in k8s/)",
    )

    @field_validator("grpc_port", mode="before")
    @classmethod
    def _empty_port_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key", "api_keys")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @model_validator(mode="after")
    def _closed_routes_need_a_key(self) -> Settings:
        if not self.public_health and not self.accepted_api_keys():
            raise ValueError("SERVE_PUBLIC_HEALTH=false needs SERVE_API_KEY or SERVE_API_KEYS: the health check "
                             "(python -m app.healthcheck) sends one of them, and a keys file holds only hashes")
        if not self.public_metrics and not self.keys_configured:
            raise ValueError("SERVE_PUBLIC_METRICS=false needs SERVE_API_KEY, SERVE_API_KEYS or SERVE_API_KEYS_FILE")
        return self

    @model_validator(mode="after")
    def _grpc_port_is_its_own(self) -> Settings:
        if self.grpc_port is not None and self.grpc_port == self.port:
            raise ValueError(f"SERVE_GRPC_PORT and SERVE_PORT are both {self.port}: gRPC needs a port of its own")
        return self

    @model_validator(mode="after")
    def _tls_needs_both_files(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("SERVE_TLS_CERT_FILE and SERVE_TLS_KEY_FILE go together: set both for HTTPS, or neither")
        return self

    @property
    def url_scheme(self) -> Literal["http", "https"]:
        """`https` when the service serves TLS itself (tls_cert_file and tls_key_file), else `http`."""
        return "https" if self.tls_cert_file is not None else "http"

    @property
    def worker_count(self) -> int:
        """`workers` as a number. `python -m app` turns `auto` into one (app.topology.topology) before any
        server process reads its settings, so only a process it did not start can meet `auto` here."""
        if self.workers == "auto":
            raise RuntimeError("SERVE_WORKERS=auto is resolved by `python -m app` before the server processes start")
        return self.workers

    def accepted_api_keys(self) -> list[str]:
        """`api_key` and every key of `api_keys`, in that order."""
        keys = [self.api_key.get_secret_value()] if self.api_key else []
        if self.api_keys:
            keys += [key.strip() for key in self.api_keys.get_secret_value().split(",") if key.strip()]
        return keys

    @property
    def keys_configured(self) -> bool:
        """Whether any key source is set: api_key, api_keys or api_keys_file."""
        return bool(self.accepted_api_keys()) or self.api_keys_file is not None

    @field_validator("low_confidence_thresholds")
    @classmethod
    def _thresholds_are_probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"SERVE_LOW_CONFIDENCE_THRESHOLDS[{name!r}] = {threshold}: a confidence lies in [0, 1]")
        return value

    @field_validator("default_models")
    @classmethod
    def _default_models_parse(cls, value: str) -> str:
        parse_default_models(value)
        return value

    def default_model_choice(self) -> dict[Literal["image", "text"], str]:
        """`default_models` parsed as {kind: model name}."""
        return parse_default_models(self.default_models)

    def model_selection(self) -> dict[str, int | None]:
        """`models` parsed as {name: pinned version or None}."""
        selection: dict[str, int | None] = {}
        for entry in filter(None, (part.strip() for part in self.models.split(","))):
            name, _, version = entry.partition(":")
            if version and not version.isdigit():
                raise ValueError(f"SERVE_MODELS entry {entry!r}: version must be a positive integer")
            selection[name] = int(version) if version else None
        return selection


def parse_default_models(value: str) -> dict[Literal["image", "text"], str]:
    """`image=NAME,text=NAME` (either part optional) as {kind: name}; ValueError naming the bad entry."""
    chosen: dict[Literal["image", "text"], str] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        kind, _, name = (part.strip() for part in entry.partition("="))
        if kind not in ("image", "text") or not name:
            raise ValueError(f"SERVE_DEFAULT_MODELS entry {entry!r}: write image=NAME or text=NAME")
        if kind in chosen:
            raise ValueError(f"SERVE_DEFAULT_MODELS names the {kind} default twice")
        chosen[kind] = name
    return chosen
