"""The summary printed at the end of a run."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from model_repository import EvaluationMetrics


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def print_summary(
    name: str, directory: Path, metrics: EvaluationMetrics | None, facts: dict[str, str]
) -> None:
    """Held-out metrics (when there was labelled data) and run facts (epochs, time, file size, parity...)
    as one table on stderr."""
    title = f"{name}: {metrics.split}" if metrics is not None else f"{name}: no held-out evaluation"
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if metrics is not None:
        table.add_row("accuracy", _percent(metrics.accuracy))
        table.add_row("precision (macro)", _percent(metrics.precision_macro))
        table.add_row("recall (macro)", _percent(metrics.recall_macro))
        table.add_row("F1 (macro)", _percent(metrics.f1_macro))
        table.add_row("ROC-AUC", _percent(metrics.roc_auc))
        table.add_row("examples", str(metrics.num_examples))
    for key, value in facts.items():
        table.add_row(key, value)
    table.add_row("written to", str(directory))
    Console(stderr=True).print(table)
