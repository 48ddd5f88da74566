"""The model repository format shared by `training/` (which writes it) and `app/` (which reads it).

This package depends on pydantic alone, so both sides can import it without pulling in the other.
"""

from model_repository.layout import (
    CONFIG_FILE,
    ModelRepositoryError,
    discover_models,
    file_sha256,
    latest_version,
    list_versions,
    load_config,
    save_config,
    version_dir,
)
from model_repository.schema import (
    EvaluationMetrics,
    ImagePreprocessing,
    ModelConfig,
    TensorSpec,
    TextPreprocessing,
)

__all__ = [
    "CONFIG_FILE",
    "EvaluationMetrics",
    "ImagePreprocessing",
    "ModelConfig",
    "ModelRepositoryError",
    "TensorSpec",
    "TextPreprocessing",
    "discover_models",
    "file_sha256",
    "latest_version",
    "list_versions",
    "load_config",
    "save_config",
    "version_dir",
]
