"""Loading one split of a task as examples, from local files or from the Hugging Face hub."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from de3.data.files import Row, columns_of, read_rows
from de3.data.tasks import TableLayout, TaskSpec
from de3.errors import De3Error
from de3.hub import hub_unreachable

log = logging.getLogger(__name__)

SOURCES = ("auto", "local", "hub")


@dataclass(frozen=True)
class Example:
    """One input: its text field(s), its target (None when the split is unlabelled), its origin."""

    texts: tuple[str, ...]
    label: int | float | None
    where: str


def _is_blank(value: object) -> bool:
    return value is None or not str(value).strip()


def _bad_row_reason(row: dict[str, object], text_columns: Sequence[str], label_column: str | None) -> str | None:
    empty = [c for c in text_columns if _is_blank(row.get(c))]
    if empty:
        return f"empty text in column {empty[0]!r}"
    if label_column is not None and _is_blank(row.get(label_column)):
        return f"empty label in column {label_column!r}"
    return None


def read_table(layout: TableLayout, split: str, path: Path, require_label: bool) -> tuple[list[Row], list[int]]:
    """(the rows of one split's file that have every text and, where the file has a label
    column, which `require_label` demands, a label; the line numbers of the rows skipped).

    A missing column is an error that lists the columns there are; extra columns are ignored.
    A row with an empty text or label is skipped (`layout.on_bad_rows="skip"`) or is an error
    naming its line ("error").
    """
    rows = read_rows(path, layout.headerless.get(split), layout.encoding, layout.literal_quotes)
    if not rows:
        return [], []
    columns = columns_of(rows)
    missing = [c for c in layout.text_columns if c not in columns]
    if missing:
        raise De3Error(f"{path}: missing text column(s) {missing}; columns are {sorted(columns)}")
    labelled = layout.label_column is not None and layout.label_column in columns
    if require_label and not labelled:
        raise De3Error(f"{path}: missing label column {layout.label_column!r}; columns are {sorted(columns)}")
    label_column = layout.label_column if labelled else None
    kept, skipped = [], []
    for line, row in rows:
        reason = _bad_row_reason(row, layout.text_columns, label_column)
        if reason is None:
            kept.append((line, row))
        elif layout.on_bad_rows == "error":
            raise De3Error(f"{path}:{line}: {reason} (task.on_bad_rows=skip skips such rows)")
        else:
            skipped.append(line)
    return kept, skipped


def _from_rows(task: TaskSpec, split: str, path: Path) -> list[Example]:
    layout = task.local
    rows, skipped = read_table(layout, split, path, require_label=split not in task.test_splits)
    if skipped:
        log.warning(
            "%s: skipped %d row(s) with an empty text or label, at line(s) %s",
            path,
            len(skipped),
            ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else ""),
        )
    labelled = bool(rows) and layout.label_column in rows[0][1]
    return [
        Example(
            tuple(str(row[c]) for c in layout.text_columns),
            task.encode_label(row[layout.label_column], f"{path}:{line}") if labelled else None,
            f"{path}:{line}",
        )
        for line, row in rows
    ]


def _from_hub(task: TaskSpec, split: str) -> list[Example]:
    import datasets  # slow to import; only the hub path needs it

    hub_unreachable()  # if so, offline mode: the datasets cache or an error at once, no retries
    hub = task.hub
    try:
        rows = datasets.load_dataset(hub.path, hub.name, split=split)
    except Exception as err:  # the hub raises many types (connection, missing repo, ...)
        raise De3Error(
            f"could not load {hub.path}/{hub.name} split {split!r} from the Hugging Face hub: {err}"
        ) from None
    examples = []
    for index, row in enumerate(rows):
        where = f"{hub.path}/{hub.name}[{split}][{index}]"
        raw_label = row.get(hub.label_column)
        unlabelled = raw_label is None or raw_label == -1  # the hub marks hidden test labels -1
        label = None if unlabelled else task.encode_label(raw_label, where)
        examples.append(Example(tuple(str(row[c]) for c in hub.text_columns), label, where))
    return examples


def load_split(task: TaskSpec, split: str, data_dir: str | Path | None, source: str = "auto") -> list[Example]:
    """Every example of one split.

    `source="local"` reads the task's files under `data_dir`; `"hub"` loads the task's hub
    dataset; `"auto"` reads local files when present and falls back to the hub otherwise.
    The error when neither works names the file it looked for and what the hub said.
    """
    if source not in SOURCES:
        raise De3Error(f"data.source must be one of {list(SOURCES)}, got {source!r}")
    if split not in task.local.files:
        raise De3Error(f"task {task.name!r} has no split {split!r}; it has {sorted(task.local.files)}")
    path = task.local.file_path(split, data_dir)
    if source == "local" or (source == "auto" and path.is_file()):
        if not path.is_file():
            raise De3Error(f"task {task.name!r}, split {split!r}: file not found: {path} (set data.data_dir)")
        examples = _from_rows(task, split, path)
    elif task.hub is None:
        raise De3Error(f"task {task.name!r}, split {split!r}: file not found: {path}")
    else:
        try:
            examples = _from_hub(task, split)
        except De3Error as err:
            if source == "hub":
                raise
            raise De3Error(
                f"task {task.name!r}, split {split!r}: no local file at {path} "
                f"(set data.data_dir or DE3_GLUE_DIR), and {err}"
            ) from None
    if not examples:
        raise De3Error(f"task {task.name!r}, split {split!r} is empty ({path})")
    return examples
