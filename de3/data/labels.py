"""Class names found in the data: the distinct values of the training file's label column."""

from __future__ import annotations

from collections.abc import Sequence

from de3.errors import De3Error

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
