"""Class names found in the data: the distinct values of the training file's label column."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, open_dict

from de3.data.sources import read_table
from de3.data.tasks import custom_layout
from de3.errors import De3Error

log = logging.getLogger(__name__)

MAX_CLASSES = 100


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def infer_label_names(values: Sequence[str], where: str) -> tuple[str, ...]:
    """The sorted distinct label values (integers in numeric order). Values that look like a
    numeric target (over `MAX_CLASSES` distinct values, or numbers with fractions) and a single
    value are De3Errors; `where` names the file and column."""
    distinct = set(values)
    numbers = [_number(v) for v in distinct]
    numeric = all(n is not None for n in numbers)
    if len(distinct) > MAX_CLASSES or (numeric and any(not n.is_integer() for n in numbers)):
        shown = ", ".join(sorted(distinct)[:5])
        raise De3Error(
            f"{where}: {len(distinct)} distinct label values ({shown}, ...) look like a numeric target: "
            "set task.regression=true, or name the classes in task.label_names"
        )
    if len(distinct) < 2:
        raise De3Error(f"{where}: every row has the label {next(iter(distinct), '')!r}; a classifier needs two classes")
    if numeric:
        return tuple(sorted(distinct, key=float))
    return tuple(sorted(distinct))


def fill_label_names(task_cfg: DictConfig) -> None:
    """For a custom classification task with `label_names: null`, set them in `task_cfg` from
    the training file (logged with their counts), so the model and its checkpoint carry them."""
    if task_cfg.get("files") is None or task_cfg.get("regression") or task_cfg.get("label_names") is not None:
        return
    layout = custom_layout(task_cfg)
    path = Path(layout.files["train"])
    rows, _ = read_table(layout, "train", path, require_label=True)  # skipped rows are logged when loaded
    values = [str(row[layout.label_column]).strip() for _, row in rows]
    if not values:
        raise De3Error(f"{path}: no labelled rows")
    names = infer_label_names(values, f"{path}, column {layout.label_column!r}")
    counts = Counter(values)
    log.info("labels found in %s: %s", path, ", ".join(f"{name} ({counts[name]} rows)" for name in names))
    with open_dict(task_cfg):
        task_cfg.label_names = list(names)
