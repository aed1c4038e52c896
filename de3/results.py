"""Per-exit results of an evaluation: a table on the console, `results.json` and `results.md`;
and the final exit's scores per class."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from de3.utils.io import write_text_atomic

Scores = dict[str, dict[str, list[float]]]  # split -> metric -> one score per exit
Confusion = list[list[int]]  # rows: true class, columns: predicted class


def _columns(scores: Scores) -> list[tuple[str, str]]:
    return [(split, metric) for split, metrics in scores.items() for metric in metrics]


def results_markdown(scores: Scores, title: str) -> str:
    """A markdown table: one row per exit, one column per (split, metric)."""
    columns = _columns(scores)
    num_exits = len(next(iter(next(iter(scores.values())).values())))
    lines = [
        f"### {title}",
        "",
        "| exit | " + " | ".join(f"{s} {m}" for s, m in columns) + " |",
        "|---:|" + "---:|" * len(columns),
    ]
    for layer in range(num_exits):
        lines.append(f"| {layer + 1} | " + " | ".join(f"{100 * scores[s][m][layer]:.2f}" for s, m in columns) + " |")
    return "\n".join(lines) + "\n"


def print_results(scores: Scores, title: str) -> None:
    """Print the per-exit table (scores ×100) to the console."""
    table = Table(title=title)
    table.add_column("exit", justify="right")
    columns = _columns(scores)
    for split, metric in columns:
        table.add_column(f"{split}\n{metric}", justify="right")
    num_exits = len(scores[columns[0][0]][columns[0][1]])
    for layer in range(num_exits):
        table.add_row(str(layer + 1), *(f"{100 * scores[s][m][layer]:.2f}" for s, m in columns))
    Console().print(table)


def save_results(output_dir: str | Path, scores: Scores, title: str, meta: dict[str, Any]) -> None:
    """Write `results.json` (scores and `meta`) and `results.md` into `output_dir`."""
    output_dir = Path(output_dir)
    write_text_atomic(output_dir / "results.json", json.dumps({**meta, "scores": scores}, indent=2) + "\n")
    write_text_atomic(output_dir / "results.md", results_markdown(scores, title))


def per_class_scores(label_names: Sequence[str], confusion: Confusion) -> dict[str, dict[str, float | int]]:
    """Each class's precision, recall, F1 and support (true rows) from a confusion matrix, as
    scikit-learn's `classification_report` computes them: 0 where a ratio is undefined (a class
    never predicted, or absent)."""
    counts = torch.tensor(confusion, dtype=torch.float64)
    correct, true, predicted = counts.diagonal(), counts.sum(1), counts.sum(0)
    precision = (correct / predicted).nan_to_num(0.0)  # 0/0 only: correct <= predicted, correct <= true
    recall = (correct / true).nan_to_num(0.0)
    f1 = (2 * precision * recall / (precision + recall)).nan_to_num(0.0)
    return {
        name: {"precision": p, "recall": r, "f1": f, "support": int(n)}
        for name, p, r, f, n in zip(label_names, precision.tolist(), recall.tolist(), f1.tolist(), true.tolist())
    }


def class_results(label_names: Sequence[str] | None, confusion: Mapping[str, Confusion]) -> dict[str, Any]:
    """results.json's entries on classes: `labels` (the class names in index order; null for
    regression) and, for each eval split, the final exit's `per_class` scores (`per_class_scores`)
    and `confusion_matrix` (rows: true class, columns: predicted, in `labels` order)."""
    if label_names is None:
        return {"labels": None}
    return {
        "labels": list(label_names),
        "per_class": {split: per_class_scores(label_names, matrix) for split, matrix in confusion.items()},
        "confusion_matrix": dict(confusion),
    }
