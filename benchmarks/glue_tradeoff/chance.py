"""What a model that learned nothing scores on a task's dev split, and whether the methods beat it."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import torch

from benchmarks.glue_tradeoff.kept_runs import Run
from de3.data.sources import load_split
from de3.data.tasks import GLUE_TASKS
from de3.errors import De3Error
from de3.metrics import make_metric
from de3.utils.config import REPO_ROOT

CHANCE_MARGIN = 0.03  # a task is "at chance" when every method's full depth is this close to a constant answer
SHARED_DIR = Path(os.environ.get("DE3_SHARED_DIR") or REPO_ROOT.parent / "shared")
DEFAULT_GLUE_DIR = Path(os.environ.get("DE3_GLUE_DIR") or SHARED_DIR / "data" / "glue")  # as conf/paths


def dev_labels(task: str, data_dir: Path) -> torch.Tensor | None:
    """The labels of the task's dev file at `data_dir`; None for regression, or when the file is
    not there."""
    spec = GLUE_TASKS[task]
    if spec.is_regression:
        return None
    try:
        return torch.tensor([e.label for e in load_split(spec, spec.eval_splits[0], data_dir, source="local")])
    except De3Error:
        return None


def constant_answer_score(task: str, labels: torch.Tensor) -> float:
    """The best main-metric score of answering one class for every example of `labels` (GLUE's
    metric definitions, `de3.metrics`): what a model that learned nothing gets."""
    spec = GLUE_TASKS[task]
    scores = []
    for answer in range(spec.num_outputs):
        metric = make_metric(spec.main_metric, spec.num_outputs)
        metric.update(torch.full_like(labels, answer), labels)
        scores.append(float(metric.compute()))
    return max(scores)


def chance_note(task: str, by_method: dict[str, list[Run]], data_dir: Path) -> list[str]:
    """A line naming the constant answer's dev score and, for accuracy, how far one seed's score
    can move by sampling alone; it says the task is at chance for this backbone when every
    method's mean full depth lies within `CHANCE_MARGIN` of the constant answer."""
    labels = dev_labels(task, data_dir)
    if labels is None:
        return []
    constant = constant_answer_score(task, labels)
    depths = [statistics.fmean(r.full_depth for r in runs) for runs in by_method.values() if runs]
    line = f"The best constant answer scores {100 * constant:.1f} on dev."
    if GLUE_TASKS[task].main_metric == "accuracy" and depths:
        n, accuracy = len(labels), statistics.fmean(depths)
        line += (
            f" Dev has {n} examples: one answer moves accuracy by {100 / n:.2f} points, and the binomial "
            f"standard error of an accuracy of {100 * accuracy:.1f} (the methods' mean full depth) is "
            f"{100 * (accuracy * (1 - accuracy) / n) ** 0.5:.1f} points."
        )
    if depths and all(abs(d - constant) <= CHANCE_MARGIN for d in depths):
        line += (
            f" **At chance for this backbone**: every method's full depth is within {100 * CHANCE_MARGIN:.0f} "
            "points of it, so this task does not separate the methods."
        )
    return [line, ""]
