"""A custom task's config made complete before the model is built from it: file paths made
absolute and label names read from the training file, so the checkpoint carries both."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig, open_dict

from de3.data.labels import infer_label_names
from de3.data.sources import read_table
from de3.data.tasks import custom_layout
from de3.errors import De3Error

log = logging.getLogger(__name__)


def complete_custom_task(task_cfg: DictConfig) -> None:
    """For a custom task (one with `files`): make its file paths absolute, so a later
    `mode=sweep|predict` finds them from any directory, and, for classification with
    `label_names: null`, set the label names found in the training file (logged with counts)."""
    if task_cfg.get("files") is None:
        return
    layout = custom_layout(task_cfg)
    with open_dict(task_cfg):
        task_cfg.files = dict(layout.files)
    if task_cfg.get("regression") or task_cfg.get("label_names") is not None:
        return
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
