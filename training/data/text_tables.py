"""Labelled text in CSV, TSV or JSON Lines files, with named (or, without a header, numbered) columns."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import DatasetError

TABLE_FORMATS = ("auto", "csv", "tsv", "jsonl")


@dataclass
class TextTable:
    """Texts and their raw label values, with the file line of each row for error messages."""

    path: Path
    texts: list[str]
    labels: list[str]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, indices: Sequence[int]) -> TextTable:
        return TextTable(
            self.path,
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.lines[i] for i in indices],
        )


def detect_format(path: Path, table_format: str) -> str:
    """`auto`: `.csv` is CSV, `.jsonl`/`.json` is JSON Lines, anything else (`.tsv`, `.txt`, none) is TSV."""
    if table_format != "auto":
        return table_format
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    return "tsv"


def _delimited_records(
    path: Path, handle, table_format: str, header: bool
) -> Iterator[tuple[int, dict[str, str]]]:
    if table_format == "csv":
        reader = csv.reader(handle)
    else:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
    names: list[str] | None = None
    for fields in reader:
        if not fields or fields == [""]:
            continue
        if names is None:
            if header:
                names = [name.strip() for name in fields]
                continue
            names = [str(index) for index in range(len(fields))]
        yield reader.line_num, dict(zip(names, fields, strict=False))


def _jsonl_records(path: Path, handle) -> Iterator[tuple[int, dict[str, str]]]:
    for line_number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}, line {line_number}: invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise DatasetError(
                f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}"
            )
        yield line_number, {key: "" if value is None else str(value) for key, value in record.items()}


def read_text_table(
    path: Path,
    text_columns: Sequence[str],
    label_column: str,
    table_format: str = "auto",
    header: bool = True,
) -> TextTable:
    """Read every row; several text columns are joined with a space. Without a header, columns are
    numbered from 0. A missing column, an empty text or label, or an unparsable row is a `DatasetError`
    naming the file and line."""
    path = Path(path)
    table_format = detect_format(path, table_format)
    columns = [*text_columns, label_column]
    table = TextTable(path, [], [], [])
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            if table_format == "jsonl":
                records = _jsonl_records(path, handle)
            else:
                records = _delimited_records(path, handle, table_format, header)
            for line, record in records:
                missing = [column for column in columns if column not in record]
                if missing:
                    raise DatasetError(
                        f"{path}, line {line}: no column {', '.join(map(repr, missing))} "
                        f"(columns: {', '.join(map(repr, record))})"
                    )
                text = " ".join(record[column].strip() for column in text_columns).strip()
                label = record[label_column].strip()
                if not text:
                    raise DatasetError(
                        f"{path}, line {line}: empty text in column(s) {', '.join(text_columns)}"
                    )
                if not label:
                    raise DatasetError(f"{path}, line {line}: empty label in column {label_column!r}")
                table.texts.append(text)
                table.labels.append(label)
                table.lines.append(line)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed {table_format.upper()}: {exc}") from None
    if not table.texts:
        raise DatasetError(f"{path}: no rows")
    return table


def label_values(labels: Sequence[str]) -> list[str]:
    """The distinct label values in output order: numeric order when all are integers, else sorted."""
    distinct = set(labels)
    if all(value.lstrip("-").isdigit() for value in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def encode_labels(table: TextTable, values: Sequence[str], reference: Path) -> np.ndarray:
    """Label indices into `values` (from the training file `reference`); an unknown label names its row."""
    index = {value: position for position, value in enumerate(values)}
    encoded = np.empty(len(table), dtype=np.int64)
    for row, label in enumerate(table.labels):
        if label not in index:
            raise DatasetError(
                f"{table.path}, line {table.lines[row]}: label {label!r} does not occur in the training data "
                f"{reference} (labels: {', '.join(values)})"
            )
        encoded[row] = index[label]
    return encoded
