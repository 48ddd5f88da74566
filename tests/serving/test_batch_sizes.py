"""Batch sizes chosen by measurement at warm-up: the rule, and what /models and /metrics report."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.models.batch_tuning import BatchTiming, best_batch_size, candidate_sizes
from app.models.served_model import CPU_MAX_PADDING

from .conftest import SHARED_SERVER_SHARED_INFERENCE, SHARED_SERVER_WORKERS, StartServer
from .support import ModelUnderTest, scrape, value


def curve(items_per_s: dict[int, float]) -> list[BatchTiming]:
    return [BatchTiming(size, size / rate) for size, rate in items_per_s.items()]


@pytest.mark.parametrize(("configured", "sizes"), [
    (1, [1]), (2, [1, 2]), (24, [1, 2, 4, 8, 16, 24]), (64, [1, 2, 4, 8, 16, 32, 64]),
])
def test_candidate_sizes_are_powers_of_two_up_to_the_configured_maximum(configured: int, sizes: list[int]) -> None:
    assert candidate_sizes(configured) == sizes


def test_a_peak_caps_batches_where_items_per_second_fall_away() -> None:
    """MiniLM-L6 at 128 tokens on two cores: best at 8, 16 slower by 6%, 32 by 12%."""
    assert best_batch_size(curve({1: 20.0, 2: 30.0, 4: 37.0, 8: 40.6, 16: 38.0, 32: 35.8})) == 8


def test_a_plateau_keeps_the_largest_size() -> None:
    assert best_batch_size(curve({1: 3200, 2: 3700, 4: 4000, 8: 4150, 16: 4250, 32: 4300, 64: 4290})) == 64


def test_batch_one_wins_when_batching_does_not_pay() -> None:
    assert best_batch_size(curve({1: 1000, 2: 800, 4: 700})) == 1


def test_models_and_metrics_report_the_measured_size(http: httpx.Client, image_model: ModelUnderTest,
                                                      text_model: ModelUnderTest) -> None:
    listed = {item["name"]: item for item in http.get("/models").json()["models"]}
    samples = scrape(http)
    for model in (image_model, text_model):
        item = listed[model.name]
        configured = model.config.max_batch_size
        measured = item["batch_size_curve"]
        assert item["configured_max_batch_size"] == configured
        assert [timing["batch_size"] for timing in measured] == candidate_sizes(configured)
        assert all(timing["ms_per_batch"] > 0 and timing["items_per_s"] > 0 for timing in measured), measured
        best = best_batch_size([BatchTiming(timing["batch_size"], timing["ms_per_batch"] / 1000)
                                for timing in measured])
        if model is text_model:  # timed at full length: the best size caps padded tokens, not rows
            assert item["max_padded_tokens"] == best * model.config.preprocessing.max_length
            assert item["max_batch_size"] == configured
            assert item["max_padding"] == CPU_MAX_PADDING  # the suite serves on the CPU
        else:
            assert item["max_padded_tokens"] is None
            assert item["max_padding"] is None
            assert item["max_batch_size"] == best
        reported = value(samples, "modelserver_max_batch_size", model=model.name)
        if SHARED_SERVER_WORKERS == 1 or SHARED_SERVER_SHARED_INFERENCE:  # measured in one process
            assert reported == item["max_batch_size"]
        else:  # each worker measures its own size; the gauge is the largest, /models shows the answering worker's
            assert reported >= item["max_batch_size"]


def test_search_off_keeps_the_configured_size(start_server: StartServer, models_dir: Path,
                                              image_model: ModelUnderTest) -> None:
    server = start_server(models_dir, SERVE_MODELS=image_model.name, SERVE_BATCH_SIZE_SEARCH="false",
                          SERVE_MAX_BATCH_SIZE="12")
    server.wait_ready()
    with server.client() as client:
        (item,) = client.get("/models").json()["models"]
        assert item["max_batch_size"] == item["configured_max_batch_size"] == 12
        assert [timing["batch_size"] for timing in item["batch_size_curve"]] == [1]
