"""All the splits a stage needs at once: files read, held-out splits cut from the training
file, and the training split checked against the others for repeats and leakage."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from de3.data.held_out import strata, stratified_split
from de3.data.overlap import drop_overlap, find_overlap, report_overlap
from de3.data.sources import Example, load_split
from de3.data.tasks import TaskSpec
from de3.errors import De3Error
from de3.utils.io import write_text_atomic

log = logging.getLogger(__name__)
MAX_HELD_OUT = 0.5  # a held-out split's minimum row count never takes more than this share of the file


def _cut_held_out(task: TaskSpec, data_dir: str | Path | None, source: str) -> dict[str, list[Example]]:
    layout = task.local
    rows = load_split(task, "train", data_dir, source)
    row_strata = strata([example.label for example in rows], task.is_regression)
    fractions = dict(layout.held_out)
    while True:  # a split below its minimum takes a larger fraction (rounding is per stratum)
        parts = stratified_split(row_strata, fractions, layout.split_seed)
        short = {s: n for s, n in layout.held_out_minimum.items() if len(parts[s]) < n}
        if not short:
            break
        fractions = {s: f + (short[s] - len(parts[s])) / len(rows) if s in short else f for s, f in fractions.items()}
        if sum(fractions.values()) > MAX_HELD_OUT:
            parts = stratified_split(row_strata, layout.held_out, layout.split_seed)
            log.warning(
                "%s has %d rows: held-out splits of at least %s rows would leave less than half of it for "
                "training, so they take their fractions %s instead (%s); thresholds chosen on few rows are noisy",
                layout.files["train"],
                len(rows),
                dict(layout.held_out_minimum),
                dict(layout.held_out),
                ", ".join(f"{s} {len(parts[s])} rows" for s in layout.held_out),
            )
            break
    for split, fraction in layout.held_out.items():
        if not parts[split]:
            raise De3Error(
                f"task {task.name!r}: task.{split}_fraction={fraction} of {len(rows)} rows leaves {split} empty"
            )
    log.info(
        "%s: %s, seed %d (stratified by %s)",
        layout.files["train"],
        ", ".join(f"{split} {len(indices)} rows" for split, indices in parts.items()),
        layout.split_seed,
        "target quantile" if task.is_regression else "label",
    )
    return {split: [rows[i] for i in indices] for split, indices in parts.items()}


def load_splits(
    task: TaskSpec, splits: Sequence[str], data_dir: str | Path | None, source: str = "auto"
) -> dict[str, list[Example]]:
    """The examples of each of `splits`.

    Splits in `task.local.held_out` (and then train) are cut from the training file. When
    train is asked for, its exact repeats and the texts it shares with the other splits at hand
    are logged, and dropped from train under `task.local.deduplicate`.
    """
    held_out = task.local.held_out
    needs_cut = bool(held_out) and any(split == "train" or split in held_out for split in splits)
    loaded = _cut_held_out(task, data_dir, source) if needs_cut else {}
    for split in splits:
        if split not in loaded:
            loaded[split] = load_split(task, split, data_dir, source)
    if "train" in splits:
        overlap = find_overlap(loaded["train"], {s: e for s, e in loaded.items() if s != "train"})
        report_overlap(overlap, task.local.deduplicate)
        if task.local.deduplicate:
            loaded["train"] = drop_overlap(loaded["train"], overlap)
    return {split: loaded[split] for split in splits}


def write_split_rows(origins: Mapping[str, Sequence[str]], path: Path) -> Path:
    """Save which rows (file → line numbers) each split used, as JSON, from examples' `where`."""
    record: dict[str, dict[str, list[int]]] = {}
    for split, wheres in origins.items():
        lines: dict[str, list[int]] = defaultdict(list)
        for where in wheres:
            file, _, line = where.rpartition(":")
            lines[file].append(int(line))
        record[split] = dict(lines)
    return write_text_atomic(path, json.dumps(record) + "\n")
