"""The model cases (`--models`): which model, which inputs, and where the model files are."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from model_repository import latest_version, version_dir

from . import REPO

BUILT_MODELS = REPO / "benchmarks" / "results" / "models"



@dataclass(frozen=True)
class Case:
    """One model with one kind of input."""

    name: str
    model: str  # folder name in the model repository
    built: bool  # built by benchmarks/build_models.py (else bundled in models/)
    inputs: str  # input set (benchmarks/inputs.py)
    count: int  # distinct inputs
    about: str


CASES = {
    case.name: case for case in (
        Case("mnist-cnn", "mnist-cnn", False, "mnist", 512, "bundled CNN (28x28 grey); PNG digits"),
        Case("sst2-textcnn", "sst2-textcnn", False, "sst2", 872, "bundled TextCNN; SST-2 sentences, own lengths"),
        Case("efficientnet-lite0-imagenet", "efficientnet-lite0-imagenet", False, "photos", 96,
             "bundled EfficientNet-Lite0 at 224x224 RGB; JPEG photos of many sizes"),
        Case("resnet18", "resnet18", True, "photos", 96, "ResNet-18 at 224x224 RGB; JPEG photos of many sizes"),
        Case("minilm-128", "minilm-l6", True, "sst2-long", 256,
             "MiniLM-L6, every text truncated to 128 tokens (heavy model, fixed length)"),
        Case("minilm-sst2", "minilm-l6", True, "sst2", 872,
             "MiniLM-L6 on SST-2 sentences at their own lengths (mixed-length real text)"),
    )
}



def model_directory(case: Case, args: argparse.Namespace) -> Path | None:
    root = args.built_models_dir if case.built else REPO / "models"
    version = latest_version(root / case.model) if (root / case.model).is_dir() else None
    return version_dir(root, case.model, version) if version else None


def missing_models(args: argparse.Namespace) -> list[str]:
    """Each model that a case asked for needs and that is not there, with the command that builds it."""
    how = {True: f"in {args.built_models_dir} (`.venv/bin/python benchmarks/build_models.py` builds it, about "
                 "1.5 min on 2 cores)",
           False: f"in {REPO / 'models'} (`make models` builds it)"}
    cases = [CASES[name] for name in args.models]
    return sorted({f"{case.model} {how[case.built]}" for case in cases if model_directory(case, args) is None})
