"""Writing model versions: `<models dir>/<name>/<version>/`, staged in a hidden folder and renamed into
place once complete (config.json last), so a server scanning the repository never sees half a version."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from model_repository import ModelConfig, save_config, version_dir
from training.errors import TrainingError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def resolve_version(models_dir: Path, name: str, version: int | None, overwrite: bool) -> int:
    """The requested version, or the next free integer; fails early if the version exists and
    `overwrite` is false."""
    if not NAME_PATTERN.match(name):
        raise TrainingError(
            f"model name {name!r} must match {NAME_PATTERN.pattern} (lowercase, digits, . _ -)"
        )
    if version is None:
        model_dir = Path(models_dir) / name
        taken = (
            [int(child.name) for child in model_dir.iterdir() if child.name.isdigit()]
            if model_dir.is_dir()
            else []
        )
        return max(taken, default=0) + 1
    if version < 1:
        raise TrainingError(f"--version must be 1 or more, got {version}")
    if version_dir(models_dir, name, version).exists() and not overwrite:
        raise TrainingError(
            f"{version_dir(models_dir, name, version)} already exists; pass --overwrite to replace it"
        )
    return version


def staging_dir(models_dir: Path, name: str, version: int) -> Path:
    """An empty hidden folder beside the version folder (the server ignores non-numeric folders)."""
    path = Path(models_dir) / name / f".staging-{version}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def publish(staging: Path, config: ModelConfig, models_dir: Path) -> Path:
    """Write config.json into `staging` and move it to `<models dir>/<name>/<version>`, replacing an
    existing version folder (the caller checked `overwrite` in `resolve_version`)."""
    save_config(config, staging)
    target = version_dir(models_dir, config.name, config.version)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target
