"""The training loop: AdamW, warmup + cosine decay, progress bars, early stopping on validation accuracy."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from training.options import CommonOptions

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float


@dataclass
class FitResult:
    history: list[EpochRecord]
    best_epoch: int
    stopped_early: bool

    def as_dict(self) -> dict:
        return {"history": [asdict(record) for record in self.history], "best_epoch": self.best_epoch}


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    learning_rate: float
    weight_decay: float
    warmup_fraction: float
    patience: int
    label_smoothing: float = 0.0
    max_grad_norm: float | None = 1.0
    amp: bool = False

    @classmethod
    def from_options(cls, options: CommonOptions, defaults: Mapping[str, Any]) -> FitSettings:
        """The run's settings: the command-line options, else the architecture's `defaults`."""
        return cls(
            epochs=options.epochs or defaults["epochs"],
            learning_rate=options.learning_rate or defaults["learning_rate"],
            weight_decay=options.weight_decay,
            warmup_fraction=options.warmup_fraction,
            patience=options.patience,
            label_smoothing=options.label_smoothing,
            amp=options.amp,
        )


def to_device(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch of model inputs; image batches go channels-last, which speeds up convolutions."""
    return {
        name: tensor.to(device, non_blocking=True, memory_format=torch.channels_last)
        if tensor.dim() == 4
        else tensor.to(device, non_blocking=True)
        for name, tensor in inputs.items()
    }


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float):
    """Linear warmup over the first `warmup_fraction` of the steps, then cosine decay to zero."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _progress(iterable: Iterable, **kwargs) -> tqdm:
    """Live bars on a terminal; in a log file, an update at most every 30 s."""
    return tqdm(iterable, dynamic_ncols=True, mininterval=0.2 if sys.stderr.isatty() else 30.0, **kwargs)


@torch.no_grad()
def predict(
    model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits and labels for every example of `loader`, in order."""
    model.eval()
    all_logits, all_labels = [], []
    for inputs, labels in loader:
        with _autocast(device, amp):
            logits = model(**to_device(inputs, device))
        all_logits.append(logits.float().cpu().numpy())
        all_labels.append(labels.numpy())
    return np.concatenate(all_logits), np.concatenate(all_labels)


def _validate(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool) -> tuple[float, float]:
    logits, labels = predict(model, loader, device, amp)
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    return loss, float((logits.argmax(axis=1) == labels).mean())


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    settings: FitSettings,
    device: torch.device,
) -> FitResult:
    """Train, validate after each epoch, stop after `patience` epochs without a better validation
    accuracy (ties go to the lower validation loss) and leave the best weights in `model`."""
    model.to(device)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
    )
    scheduler = warmup_cosine(optimizer, settings.epochs * len(train_loader), settings.warmup_fraction)
    history: list[EpochRecord] = []
    best: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] = {}
    best_epoch = 0
    stale = 0
    epochs = _progress(range(1, settings.epochs + 1), desc="epochs", unit="epoch")
    for epoch in epochs:
        model.train()
        started = time.perf_counter()
        total_loss, correct, seen = 0.0, 0, 0
        batches = _progress(train_loader, desc=f"epoch {epoch}", unit="batch", leave=False)
        for inputs, labels in batches:
            inputs, labels = to_device(inputs, device), labels.to(device, non_blocking=True)
            with _autocast(device, settings.amp):
                logits = model(**inputs)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if settings.label_smoothing:  # report plain cross-entropy, comparable with validation loss
                loss = F.cross_entropy(logits.detach().float(), labels)
            total_loss += loss.item() * len(labels)
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += len(labels)
            batches.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
        val_loss, val_accuracy = _validate(model, val_loader, device, settings.amp)
        record = EpochRecord(
            epoch=epoch,
            train_loss=total_loss / seen,
            train_accuracy=correct / seen,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            learning_rate=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - started,
        )
        history.append(record)
        score = (val_accuracy, -val_loss)
        improved = best is None or score > best
        if improved:
            best, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(
                {name: value.detach().cpu() for name, value in model.state_dict().items()}
            )
        else:
            stale += 1
        epochs.set_postfix(val_acc=f"{val_accuracy:.4f}", best=best_epoch, refresh=False)
        tqdm.write(
            f"epoch {epoch}/{settings.epochs}: "
            f"train loss {record.train_loss:.4f} acc {record.train_accuracy:.4f} | "
            f"val loss {val_loss:.4f} acc {val_accuracy:.4f} | "
            f"{record.seconds:.0f}s{' *' if improved else ''}",
            file=sys.stderr,
        )
        if stale >= settings.patience:
            tqdm.write(f"early stopping: no better validation accuracy for {stale} epochs", file=sys.stderr)
            break
    epochs.close()
    model.load_state_dict(best_state)
    return FitResult(history=history, best_epoch=best_epoch, stopped_early=len(history) < settings.epochs)


def run_record(
    result: FitResult, settings: FitSettings, batch_size: int, seed: int, device: torch.device, seconds: float
) -> tuple[dict[str, Any], dict[str, str]]:
    """Provenance of one `fit` run for config.json's `training`, and its lines of the summary table."""
    provenance = {
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        **asdict(settings),
        "batch_size": batch_size,
        "seed": seed,
        "device": str(device),
        "torch_version": torch.__version__,
        "training_seconds": round(seconds, 1),
    }
    facts = {
        "epochs (best)": f"{len(result.history)} ({result.best_epoch})",
        "training time": f"{seconds / 60:.1f} min on {device}",
    }
    return provenance, facts
