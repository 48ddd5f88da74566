"""The command line itself: documented options and the default-models entry point."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from training.cli import build_parser, main


def test_every_option_is_documented() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"image", "text", "default-models", "reference", "sample-photos"}
    for name, command in commands.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"


def test_help_lists_the_main_options(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["image", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--idx-dir",
        "--image-folder",
        "--offline",
        "--seed",
        "--device",
        "--patience",
        "--quantize",
    ):
        assert option in out


def test_default_models_say_which_shared_data_is_missing(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no-such-data"
    assert main(["default-models", "--data-dir", str(missing), "--models-dir", str(tmp_path / "models")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {missing / 'mnist'} not found: the default model 'mnist-cnn' is trained")
    assert "--data-dir" in err
    assert not (tmp_path / "models").exists()


def test_cuda_request_without_gpu_is_an_error(tmp_path: Path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    args = [
        "image",
        "--offline",
        "digits-8x8",
        "--device",
        "cuda",
        "--name",
        "x",
        "--models-dir",
        str(tmp_path),
    ]
    assert main(args) == 1
    assert "--device cuda was requested but PyTorch sees no CUDA device" in capsys.readouterr().err
