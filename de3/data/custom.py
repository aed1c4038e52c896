"""A custom task's config made complete before the model is built from it: file paths made
absolute and label names read from the training file, so the checkpoint carries both."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
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
    `label_names: null`, set the label names found in the training file (logged with counts;
    `warn_about_labels` says which look like mistakes)."""
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
    where = f"{path}, column {layout.label_column!r}"
    names = infer_label_names(values, where)
    counts = Counter(values)
    log.info("labels found in %s: %s", path, ", ".join(f"{name} ({counts[name]} rows)" for name in names))
    warn_about_labels(counts, where)
    with open_dict(task_cfg):
        task_cfg.label_names = list(names)


def warn_about_labels(counts: Counter[str], where: str) -> None:
    """Warn about label values that look like mistakes yet become classes of their own: values
    that differ only in case (`Negative`/`negative`), and classes with a single row (too few to
    learn from, and to score). `counts` maps each value to its number of rows."""
    spellings: dict[str, list[str]] = defaultdict(list)
    for name in counts:
        spellings[name.casefold()].append(name)
    for variants in spellings.values():
        if len(variants) > 1:
            log.warning(
                "%s: labels %s differ only in case, so they are %d different classes; if they mean one, "
                "write them alike in the file",
                where,
                " and ".join(repr(v) for v in sorted(variants)),
                len(variants),
            )
    single = sorted(name for name, count in counts.items() if count == 1)
    if single:
        log.warning(
            "%s: %d class(es) with a single row: %s. The model cannot learn a class from one example, nor "
            "be scored on it; add rows, or merge or drop the class",
            where,
            len(single),
            ", ".join(map(repr, single)),
        )
