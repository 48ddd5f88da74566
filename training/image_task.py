"""`python -m training image`: train, evaluate and publish an image classifier; with `--pretrained` and no
data source, hand over to `imagenet_export`."""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from model_repository import ImagePreprocessing, TensorSpec
from model_repository.image_transform import image_to_array
from training.augment import ImageTransform, eval_transform, train_transform
from training.data.idx import load_idx_dataset
from training.data.image_folder import load_image_folder
from training.data.images import ImageDataset, LabelledImages
from training.data.offline import load_offline
from training.data.splits import stratified_split
from training.errors import TrainingError
from training.evaluate import compute_metrics
from training.export import InputBatch
from training.image_defaults import ARCH_DEFAULTS, PHOTO_ARCHITECTURES
from training.image_spec import INPUT_NAME, choose_preprocessing, describe_model
from training.imagenet_export import export_imagenet_classifier
from training.loop import FitResult, FitSettings, fit, predict, run_record
from training.models.cnn import SmallCNN
from training.models.efficientnet_lite import load_efficientnet_lite0
from training.models.resnet import ResNet
from training.options import ImageOptions
from training.publish import TrainedModel, publish_model
from training.reference import ReferenceSet, held_out_set
from training.repository import resolve_version
from training.runtime import default_workers, resolve_device, seed_everything

PARITY_BATCH_SIZES = (1, 3, 8)


class ImageExamples(Dataset):
    """(`{"pixel_values": CHW tensor}`, label) pairs through a Pillow-to-array transform."""

    def __init__(self, data: LabelledImages, transform: ImageTransform) -> None:
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], int]:
        pixels = self.transform(self.data.images[index])
        return {INPUT_NAME: torch.from_numpy(pixels)}, int(self.data.labels[index])


def has_data(options: ImageOptions) -> bool:
    return any(source is not None for source in (options.idx_dir, options.image_folder, options.offline))


def check_model_options(options: ImageOptions) -> None:
    """Weights and architecture options that go together, or `TrainingError`."""
    if options.pretrained and options.arch != "efficientnet-lite0":
        raise TrainingError(f"--pretrained needs --arch efficientnet-lite0 (got {options.arch})")
    if options.freeze_epochs and not options.pretrained:
        raise TrainingError("--freeze-epochs goes with --pretrained: only pretrained layers are worth freezing")
    if options.arch == "efficientnet-lite0" and options.color_mode == "L":
        raise TrainingError("efficientnet-lite0 takes RGB images; leave --color-mode unset or RGB")
    if not has_data(options) and not options.pretrained:
        raise TrainingError(
            "give a data source (--idx-dir, --image-folder or --offline), or --pretrained alone to export "
            "the ImageNet classifier as it is"
        )


def load_dataset(options: ImageOptions) -> ImageDataset:
    """The one data source the options name."""
    sources = [options.idx_dir, options.image_folder, options.offline]
    if sum(source is not None for source in sources) != 1:
        raise TrainingError("give exactly one data source: --idx-dir, --image-folder or --offline")
    if options.test_folder is not None and options.image_folder is None:
        raise TrainingError("--test-folder goes with --image-folder")
    if options.idx_dir is not None:
        return load_idx_dataset(options.idx_dir)
    if options.image_folder is not None:
        return load_image_folder(options.image_folder, options.test_folder)
    return load_offline(options.offline)


def build_model(options: ImageOptions, channels: int, num_labels: int) -> nn.Module:
    if options.arch == "cnn":
        return SmallCNN(channels, num_labels, widths=options.cnn_widths or (32, 64, 128))
    if options.arch == "resnet":
        return ResNet(
            channels, num_labels, blocks=options.resnet_blocks or (2, 2, 2, 2), width=options.resnet_width
        )
    if options.arch == "efficientnet-lite0":
        return load_efficientnet_lite0(num_labels, options.pretrained)
    raise TrainingError(f"unknown image architecture {options.arch!r}")


def fit_in_phases(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    settings: FitSettings,
    device: torch.device,
    freeze_epochs: int,
) -> FitResult:
    """`fit`, after `freeze_epochs` epochs that train only the new head (backbone frozen) at 10x the rate;
    one history across both phases."""
    if not freeze_epochs:
        return fit(model, train_loader, val_loader, settings, device)
    backbone = model.backbone_parameters()
    for parameter in backbone:
        parameter.requires_grad_(False)
    head_settings = replace(settings, epochs=freeze_epochs, learning_rate=10 * settings.learning_rate)
    print(f"training the new head alone for {freeze_epochs} epochs...", file=sys.stderr)
    head = fit(model, train_loader, val_loader, head_settings, device)
    for parameter in backbone:
        parameter.requires_grad_(True)
    print("fine-tuning every layer...", file=sys.stderr)
    full = fit(model, train_loader, val_loader, settings, device)
    offset = len(head.history)
    history = head.history + [replace(record, epoch=record.epoch + offset) for record in full.history]
    return FitResult(history=history, best_epoch=full.best_epoch + offset, stopped_early=full.stopped_early)


def _array_batches(
    data: LabelledImages, spec: ImagePreprocessing, sizes: tuple[int, ...]
) -> list[InputBatch]:
    """Held-out images preprocessed exactly as the server does, grouped into batches of the given sizes."""
    indices = itertools.cycle(range(len(data)))
    return [
        {INPUT_NAME: np.stack([image_to_array(data.images[next(indices)], spec) for _ in range(size)])}
        for size in sizes
    ]


def split_dataset(
    dataset: ImageDataset, options: ImageOptions
) -> tuple[LabelledImages, LabelledImages, LabelledImages, str]:
    """Train, validation (early stopping) and test (final metrics) sets, stratified and seeded."""
    train, test, description = dataset.train, dataset.test, dataset.test_description
    if test is None:
        kept, held = stratified_split(
            train.labels, options.test_fraction, options.seed, f"{dataset.name} test split"
        )
        train, test = train.take(kept), train.take(held)
        description = f"{dataset.name} held-out {options.test_fraction:.0%} split ({len(test)} images)"
    kept, held = stratified_split(
        train.labels, options.val_fraction, options.seed, f"{dataset.name} validation split"
    )
    train, validation = train.take(kept), train.take(held)
    if options.max_train_samples is not None and options.max_train_samples < len(train):
        order = np.random.default_rng(options.seed).permutation(len(train))[: options.max_train_samples]
        train = train.take(np.sort(order))
    return train, validation, test, description


def test_loader_of(test: LabelledImages, spec: ImagePreprocessing, batch_size: int) -> DataLoader:
    return DataLoader(ImageExamples(test, eval_transform(spec)), batch_size=batch_size)


def held_out_reference_set(options: ImageOptions, spec: ImagePreprocessing) -> ReferenceSet:
    """The held-out split `run_image` evaluates with these options, for a model already published with
    preprocessing `spec`."""
    _, _, test, description = split_dataset(load_dataset(options), options)
    batch_size = options.batch_size or ARCH_DEFAULTS[options.arch]["batch_size"]
    return held_out_set(test_loader_of(test, spec, batch_size), description)


def run_image(options: ImageOptions) -> Path:
    """Train, evaluate on the held-out split, export and publish; returns the version folder."""
    check_model_options(options)
    if not has_data(options):
        return export_imagenet_classifier(options)
    started = time.perf_counter()
    version = resolve_version(options.models_dir, options.name, options.version, options.overwrite)
    device = resolve_device(options.device)
    seed_everything(options.seed)
    dataset = load_dataset(options)
    labels = options.label_names or dataset.class_names
    if len(labels) != len(dataset.class_names):
        raise TrainingError(f"--label-names gives {len(labels)} names for {len(dataset.class_names)} classes")
    train, validation, test, split_description = split_dataset(dataset, options)
    spec = choose_preprocessing(options, train)
    augment = (
        options.augment
        if options.augment != "auto"
        else ("crop-flip" if options.arch in PHOTO_ARCHITECTURES else "affine")
    )
    defaults = ARCH_DEFAULTS[options.arch]
    batch_size = options.batch_size or defaults["batch_size"]
    workers = default_workers(device) if options.workers is None else options.workers
    generator = torch.Generator().manual_seed(options.seed)
    loader_args = {"batch_size": batch_size, "num_workers": workers, "pin_memory": device.type == "cuda"}
    train_loader = DataLoader(
        ImageExamples(train, train_transform(spec, augment)),
        shuffle=True,
        drop_last=len(train) > batch_size,
        generator=generator,
        persistent_workers=workers > 0,
        **loader_args,
    )
    val_loader = DataLoader(ImageExamples(validation, eval_transform(spec)), **loader_args)
    test_loader = test_loader_of(test, spec, batch_size)
    print(
        f"{dataset.name}: {len(train)} train / {len(validation)} validation / {len(test)} test images, "
        f"{len(labels)} classes, {spec.color_mode} {spec.width}x{spec.height}, on {device}",
        file=sys.stderr,
    )

    model = build_model(options, spec.channels, len(labels)).to(memory_format=torch.channels_last)
    settings = FitSettings.from_options(options, defaults)
    result = fit_in_phases(model, train_loader, val_loader, settings, device, options.freeze_epochs)
    logits, targets = predict(model, test_loader, device)
    metrics = compute_metrics(logits, targets, split_description)
    training_seconds = time.perf_counter() - started

    parity = _array_batches(test, spec, PARITY_BATCH_SIZES)
    calibration = _array_batches(train, spec, (32,) * 8) if options.quantize else None
    provenance, facts = run_record(result, settings, batch_size, options.seed, device, training_seconds)
    trained = TrainedModel(
        task="image",
        model=model,
        labels=labels,
        preprocessing=spec,
        inputs=[
            TensorSpec(
                name=INPUT_NAME, dtype="float32", shape=["batch", spec.channels, spec.height, spec.width]
            )
        ],
        example={
            INPUT_NAME: torch.from_numpy(np.concatenate([parity[0][INPUT_NAME], parity[0][INPUT_NAME]]))
        },
        parity_batches=parity,
        test_loader=test_loader,
        metrics=metrics,
        fit=result,
        reference_set=held_out_set(test_loader, split_description),
        calibration=calibration,
        training={
            "dataset": str(options.idx_dir or options.image_folder or f"offline:{options.offline}"),
            "test_split": split_description,
            "examples": {"train": len(train), "validation": len(validation), "test": len(test)},
            "architecture": describe_model(options),
            "parameters": sum(p.numel() for p in model.parameters()),
            "augmentation": augment,
            "freeze_epochs": options.freeze_epochs,
            **provenance,
        },
        facts=facts,
    )
    return publish_model(trained, options, version)
