"""Device choice and seeding."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from training.errors import TrainingError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else CPU; `cuda` fails clearly when there is no GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was requested but PyTorch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def default_workers(device: torch.device) -> int:
    """Data-loading processes: none on CPU (they would compete with training), several beside a GPU."""
    if device.type == "cpu":
        return 0
    return min(8, os.cpu_count() or 1)
