"""Texts to predict on, from a file: plain text (one input per line, pairs tab-separated) or a
CSV/TSV/JSON(L) table with named text columns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from de3.data.files import FORMATS, columns_of, decode, read_rows
from de3.data.sources import Example
from de3.errors import De3Error

SETTING = "predict.encoding"  # what names the encoding, for the messages


def _check(texts: tuple[str, ...], where: str, expected: int) -> Example:
    if len(texts) != expected:
        raise De3Error(f"{where}: expected {expected} tab-separated text(s), got {len(texts)}")
    if not all(t.strip() for t in texts):
        raise De3Error(f"{where}: empty text")
    return Example(texts, None, where)


def read_inputs(path: str | Path, text_columns: Sequence[str], encoding: str = "utf-8") -> list[Example]:
    """Unlabelled examples from `path`; `text_columns` names the columns of a table (and, by
    their number, how many tab-separated texts a plain-text line holds); `encoding` is a Python
    codec or "auto" (`predict.encoding`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise De3Error(f"input file not found: {path}")
    if path.suffix.lower() in FORMATS:
        rows = read_rows(path, encoding=encoding, setting=SETTING)
        columns = columns_of(rows)
        missing = [c for c in text_columns if c not in columns]
        if rows and missing:
            raise De3Error(f"{path}: no column(s) {missing}; columns are {sorted(columns)} (set predict.text_columns)")
        examples = [
            _check(
                tuple("" if row.get(c) is None else str(row[c]) for c in text_columns),
                f"{path}:{line}",
                len(text_columns),
            )
            for line, row in rows
        ]
    else:
        lines = decode(path, encoding, SETTING).split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        examples = [
            _check(tuple(line.rstrip("\r").split("\t")), f"{path}:{number}", len(text_columns))
            for number, line in enumerate(lines, start=1)
        ]
    if not examples:
        raise De3Error(f"{path}: no inputs")
    return examples
