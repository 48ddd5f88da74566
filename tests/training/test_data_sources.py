"""Data readers: IDX files, image folders and text tables, and the errors they give on bad data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from training_support import write_idx, write_table

from training.cli import main
from training.data.idx import load_idx_dataset, read_idx
from training.data.image_folder import load_image_folder
from training.data.splits import stratified_split
from training.data.text_tables import encode_labels, label_values, read_text_table
from training.errors import DatasetError


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for prefix, count in (("train", 12), ("t10k", 5)):
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (count, 28, 28)), compress
        )
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(count) % 3, compress)
    dataset = load_idx_dataset(tmp_path)
    assert len(dataset.train) == 12 and len(dataset.test) == 5
    assert dataset.class_names == ["0", "1", "2"]
    assert dataset.train.images[4].size == (28, 28)
    assert dataset.train.labels.tolist() == [0, 1, 2] * 4


def test_idx_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: not an IDX file"):
        read_idx(bad)
    write_idx(bad, np.zeros((4, 28, 28)), compress=False)
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(DatasetError, match=r"header promises \(4, 28, 28\)"):
        read_idx(bad)
    write_idx(bad, np.zeros((4, 28, 28)), compress=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3), compress=False)
    with pytest.raises(DatasetError, match=r"has 4 images but .*train-labels-idx1-ubyte has 3 labels"):
        load_idx_dataset(tmp_path)


@pytest.mark.shared_data
def test_shared_mnist_is_read_in_full(shared_data: Path) -> None:
    dataset = load_idx_dataset(shared_data / "mnist")
    assert (len(dataset.train), len(dataset.test)) == (60000, 10000)
    assert np.bincount(dataset.test.labels).tolist()[:3] == [980, 1135, 1032]


def test_image_folder_classes_and_unreadable_file(digit_folder: Path) -> None:
    dataset = load_image_folder(digit_folder)
    assert dataset.class_names == ["digit-0", "digit-1", "digit-7"]
    assert np.bincount(dataset.train.labels).tolist() == [30, 30, 30]
    broken = digit_folder / "digit-1" / "broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match=r"digit-1/broken.png: cannot read image"):
        load_image_folder(digit_folder)


def test_image_folder_test_folder_with_unknown_class(digit_folder: Path, tmp_path: Path) -> None:
    test_root = tmp_path / "test"
    (test_root / "digit-9").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"sub-folders \['digit-9'\] are not classes of the training data"):
        load_image_folder(digit_folder, test_root)


def test_stratified_split_is_seeded_and_stratified() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    kept, held = stratified_split(labels, 0.25, seed=3, what="x")
    assert np.bincount(labels[held]).tolist() == [20, 5]
    assert np.array_equal(held, stratified_split(labels, 0.25, seed=3, what="x")[1])
    assert not np.array_equal(held, stratified_split(labels, 0.25, seed=4, what="x")[1])
    with pytest.raises(DatasetError, match=r"x: classes \[2\] have a single example"):
        stratified_split(np.array([0, 0, 1, 1, 2]), 0.4, seed=0, what="x")


def test_text_formats(tmp_path: Path) -> None:
    tsv = tmp_path / "spam"
    tsv.write_text('ham\tsee you "later"\nspam\tWIN a prize now\n\nham\tok lar\n', encoding="utf-8")
    table = read_text_table(tsv, ["1"], "0", header=False)
    assert table.texts == ['see you "later"', "WIN a prize now", "ok lar"]
    assert table.lines == [1, 2, 4]
    csv_file = tmp_path / "news.csv"
    csv_file.write_text('"3","Title one","Body, with comma"\n"1","Title two","Body two"\n', encoding="utf-8")
    table = read_text_table(csv_file, ["1", "2"], "0", header=False)
    assert table.texts == ["Title one Body, with comma", "Title two Body two"]
    assert label_values(["10", "9", "1"]) == ["1", "9", "10"]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text(json.dumps({"text": "fine", "label": 1}) + "\n", encoding="utf-8")
    assert read_text_table(jsonl, ["text"], "label").labels == ["1"]


def test_missing_column_names_file_line_and_columns(tmp_path: Path) -> None:
    path = write_table(tmp_path / "train.csv", [{"sentence": "good", "label": "1"}])
    with pytest.raises(DatasetError) as error:
        read_text_table(path, ["text"], "label")
    assert str(error.value) == f"{path}, line 2: no column 'text' (columns: 'sentence', 'label')"


def test_bad_rows_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood film\t1\n\t0\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"train.tsv, line 3: empty text in column\(s\) sentence"):
        read_text_table(path, ["sentence"], "label")
    path.write_text("sentence\tlabel\ngood film\t1\nbad film\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"train.tsv, line 3: no column 'label'"):
        read_text_table(path, ["sentence"], "label")
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"train.jsonl, line 2: invalid JSON"):
        read_text_table(jsonl, ["text"], "label")


def test_unknown_eval_label_names_file_and_line(tmp_path: Path) -> None:
    train = write_table(
        tmp_path / "train.csv", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    )
    evaluation = write_table(
        tmp_path / "eval.csv", [{"text": "fine", "label": "pos"}, {"text": "meh", "label": "neutral"}]
    )
    table = read_text_table(evaluation, ["text"], "label")
    with pytest.raises(DatasetError) as error:
        encode_labels(table, ["neg", "pos"], train)
    assert str(error.value) == (
        f"{evaluation}, line 3: label 'neutral' does not occur in the training data {train} "
        "(labels: neg, pos)"
    )


def test_cli_reports_data_errors_without_traceback(tmp_path: Path, sentiment_csv: Path, capsys) -> None:
    evaluation = write_table(tmp_path / "eval.csv", [{"review": "so so", "sentiment": "mixed"}])
    status = main(
        [
            "text",
            "--train",
            str(sentiment_csv),
            "--eval",
            str(evaluation),
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--name",
            "reviews",
            "--models-dir",
            str(tmp_path / "models"),
        ]
    )
    assert status == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {evaluation}, line 2: label 'mixed' does not occur in the training data {sentiment_csv} "
        "(labels: neg, pos)"
    )
    assert not (tmp_path / "models" / "reviews").exists()
