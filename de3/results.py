"""Per-exit results of an evaluation: a table on the console, `results.json` and `results.md`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from de3.utils.io import write_text_atomic

Scores = dict[str, dict[str, list[float]]]  # split -> metric -> one score per exit


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
