"""`python -m training image` end to end on real (offline) digits: train, evaluate, export, publish."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from training_support import check_published

from model_repository import file_sha256, load_config
from model_repository.image_transform import image_to_array
from training.cli import main
from training.data.offline import load_offline
from training.data.splits import stratified_split

FAST = ["--epochs", "4", "--batch-size", "64", "--cnn-widths", "8,16,32"]


def test_cnn_on_offline_digits_serves_what_it_measured(tmp_path: Path, capsys) -> None:
    models = tmp_path / "models"
    assert (
        main(["image", "--offline", "digits-8x8", "--name", "digits", "--models-dir", str(models), "--default",
              *FAST])
        == 0
    )
    config = check_published(models / "digits" / "1")
    assert config.default
    assert config.inputs[0].model_dump() == {
        "name": "pixel_values",
        "dtype": "float32",
        "shape": ["batch", 1, 8, 8],
    }
    assert config.labels == [str(d) for d in range(10)]
    assert config.preprocessing.color_mode == "L" and config.preprocessing.resize is None
    assert config.metrics.num_examples == 360 and len(config.metrics.confusion_matrix) == 10
    assert config.metrics.accuracy > 0.8
    assert config.training["dataset"] == "offline:digits-8x8"

    # Serve the held-out split the way the server does: Pillow image -> image_to_array -> ONNX Runtime.
    dataset = load_offline("digits-8x8")
    _, held = stratified_split(dataset.train.labels, 0.2, seed=0, what="test")
    pixels = np.stack([image_to_array(dataset.train.images[int(i)], config.preprocessing) for i in held])
    session = ort.InferenceSession(str(models / "digits" / "1" / "model.onnx"))
    logits = np.concatenate(
        [session.run(["logits"], {"pixel_values": chunk})[0] for chunk in np.array_split(pixels, 7)]
    )
    accuracy = float((logits.argmax(axis=1) == dataset.train.labels[held]).mean())
    assert accuracy == config.metrics.accuracy


def test_versions_and_int8_quantization(tmp_path: Path, capsys) -> None:
    models = tmp_path / "models"
    common = ["image", "--offline", "digits-8x8", "--name", "digits", "--models-dir", str(models), *FAST]
    assert main([*common, "--quantize", "--max-quantization-drop", "0.05"]) == 0, capsys.readouterr().err[
        -3000:
    ]
    assert main([*common, "--epochs", "1"]) == 0, capsys.readouterr().err[-3000:]
    assert sorted(p.name for p in (models / "digits").iterdir()) == ["1", "2"]

    config = check_published(models / "digits" / "1")
    assert not config.default
    quantization = config.training["quantization"]
    assert quantization["method"].startswith("static QDQ")
    assert quantization["int8_accuracy"] == config.metrics.accuracy
    assert config.metrics.split.endswith("INT8 ONNX")
    ops = {node.op_type for node in onnx.load(str(models / "digits" / "1" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert load_config(models / "digits" / "2").sha256 == file_sha256(models / "digits" / "2" / "model.onnx")

    capsys.readouterr()
    assert main([*common, "--version", "1"]) == 1
    assert "digits/1 already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main([*common, "--version", "3", "--quantize", "--max-quantization-drop", "-1"]) == 1
    assert "error: INT8 quantization costs" in capsys.readouterr().err
    assert sorted(p.name for p in (models / "digits").iterdir()) == ["1", "2"]


def test_resnet_on_an_image_folder_at_small_size(tmp_path: Path, digit_folder: Path, capsys) -> None:
    models = tmp_path / "models"
    args = [
        "image",
        "--image-folder",
        str(digit_folder),
        "--arch",
        "resnet",
        "--image-size",
        "24",
        "--resnet-blocks",
        "1,1",
        "--resnet-width",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--name",
        "photos",
        "--models-dir",
        str(models),
        "--test-fraction",
        "0.3",
    ]
    assert main(args) == 0, capsys.readouterr().err[-3000:]
    config = check_published(models / "photos" / "1")
    spec = config.preprocessing
    assert (spec.color_mode, spec.height, spec.width, spec.resize) == ("RGB", 24, 24, 27)
    assert spec.mean == [0.485, 0.456, 0.406] and spec.std == [0.229, 0.224, 0.225]
    assert config.labels == ["digit-0", "digit-1", "digit-7"]
    assert config.inputs[0].shape == ["batch", 3, 24, 24]
    assert config.metrics.num_examples == 27
    assert config.training["architecture"] == "ResNet(blocks=[1, 1], width=8)"


def test_unreadable_image_fails_before_training(tmp_path: Path, digit_folder: Path, capsys) -> None:
    (digit_folder / "digit-7" / "notes.jpg").write_text("not an image")
    args = ["image", "--image-folder", str(digit_folder), "--name", "photos", "--models-dir", str(tmp_path)]
    assert main(args) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {digit_folder / 'digit-7' / 'notes.jpg'}: cannot read image")


def test_inconsistent_normalisation_is_a_clear_error(tmp_path: Path, capsys) -> None:
    args = ["image", "--offline", "digits-8x8", "--color-mode", "RGB", "--mean", "0.5", "--std", "0.2"]
    assert main([*args, "--name", "x", "--models-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: invalid preprocessing options: Value error, mean and std need 3 values for color_mode RGB"
    )
