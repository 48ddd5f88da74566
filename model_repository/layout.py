"""Where models live on disk: `<root>/<name>/<version>/{config.json, model.onnx, ...}`."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import ValidationError

from model_repository.schema import ModelConfig

CONFIG_FILE = "config.json"


class ModelRepositoryError(Exception):
    """The model repository on disk is missing something or holds an invalid config."""


def version_dir(root: Path, name: str, version: int) -> Path:
    return Path(root) / name / str(version)


def list_versions(model_dir: Path) -> list[int]:
    """Versions of one model, ascending: the numeric sub-folders that hold a config file."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in model_dir.iterdir()
        if child.is_dir() and child.name.isdigit() and (child / CONFIG_FILE).is_file()
    )


def latest_version(model_dir: Path) -> int | None:
    versions = list_versions(model_dir)
    return versions[-1] if versions else None


def discover_models(root: Path) -> dict[str, list[int]]:
    """Every model under `root` with its versions; folders without a versioned config are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise ModelRepositoryError(f"model repository {root} does not exist")
    found = {child.name: list_versions(child) for child in sorted(root.iterdir()) if child.is_dir()}
    return {name: versions for name, versions in found.items() if versions}


def load_config(directory: Path) -> ModelConfig:
    """Read and validate `<directory>/config.json`."""
    path = Path(directory) / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelRepositoryError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return ModelConfig.model_validate_json(text)
    except ValidationError as exc:
        raise ModelRepositoryError(f"invalid {path}: {exc}") from exc


def save_config(config: ModelConfig, directory: Path) -> Path:
    """Write `config.json` into `directory` (created if needed) and return its path."""
    path = Path(directory) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
