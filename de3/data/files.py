"""Reading tabular text files (TSV, CSV, JSON, JSON Lines) with errors that name file and line."""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from de3.errors import De3Error

log = logging.getLogger(__name__)

Row = tuple[int, dict[str, str]]  # (line number in the file, column -> value)

FORMATS = {".tsv": "tsv", ".csv": "csv", ".json": "json", ".jsonl": "jsonl"}


def check_encoding(encoding: str) -> str:
    """`encoding` if Python knows the codec (or it is "auto"); otherwise a De3Error."""
    if encoding != "auto":
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise De3Error(
                f"unknown text encoding {encoding!r}: give a Python codec name (utf-8, latin-1, cp1252, ...) or auto"
            ) from None
    return encoding


def _detect(path: Path, data: bytes) -> str:
    from charset_normalizer import from_bytes  # only `auto` needs it

    best = from_bytes(data).best()
    if best is None:
        raise De3Error(f"{path}: could not detect the text encoding; name it (task.encoding=latin-1, cp1252, ...)")
    log.info("%s: detected text encoding %s", path, best.encoding)
    return best.encoding


def decode(path: Path, encoding: str = "utf-8") -> str:
    """The file's text in `encoding` (a Python codec, or "auto" to detect it), without a byte
    order mark; bytes invalid in that encoding are a De3Error naming the line."""
    data = path.read_bytes()
    codec = _detect(path, data) if check_encoding(encoding) == "auto" else encoding
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        name = "UTF-8" if codecs.lookup(codec).name == "utf-8" else codec
        raise De3Error(
            f"{path}:{line}: not valid {name} ({err.reason} at byte {err.start}); "
            "name the file's encoding (task.encoding=latin-1, cp1252, ... or auto)"
        ) from None
    return text.removeprefix("\ufeff")


def _read_delimited(path: Path, text: str, delimiter: str, column_names: Sequence[str] | None) -> list[Row]:
    # GLUE's TSVs contain bare quote characters: they must not be read as CSV quoting.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header = list(column_names) if column_names is not None else next(reader, None)
    if header is None:
        return []
    rows = []
    for fields in reader:
        line = reader.line_num
        if not fields:
            continue
        if len(fields) != len(header):
            raise De3Error(
                f"{path}:{line}: malformed row with {len(fields)} fields, expected {len(header)} ({', '.join(header)})"
            )
        rows.append((line, dict(zip(header, fields))))
    return rows


def _read_json(path: Path, text: str, lines: bool) -> list[Row]:
    rows = []
    if lines:
        for line, raw in enumerate(text.splitlines(), start=1):
            if raw.strip():
                try:
                    rows.append((line, json.loads(raw)))
                except json.JSONDecodeError as err:
                    raise De3Error(f"{path}:{line}: not valid JSON ({err.msg})") from None
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise De3Error(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(records, list):
            raise De3Error(f"{path}: expected a JSON list of objects, got {type(records).__name__}")
        rows = [(index + 1, record) for index, record in enumerate(records)]
    for line, record in rows:
        if not isinstance(record, dict):
            raise De3Error(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")
    return rows


def read_rows(path: str | Path, column_names: Sequence[str] | None = None, encoding: str = "utf-8") -> list[Row]:
    """Read every data row of a TSV/CSV/JSON/JSONL file as (line number, {column: value}).

    The format follows the file extension. `column_names` is for delimited files without a
    header row; `encoding` is as in `decode`. Raises `De3Error` naming the file (and line) for a
    missing file, bytes invalid in the encoding, or a row whose field count differs from the header's.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise De3Error(f"{path}: unknown file type {path.suffix!r}; use one of {sorted(FORMATS)}")
    if not path.is_file():
        raise De3Error(f"data file not found: {path}")
    text = decode(path, encoding)
    if fmt in ("json", "jsonl"):
        return _read_json(path, text, lines=fmt == "jsonl")
    return _read_delimited(path, text, "\t" if fmt == "tsv" else ",", column_names)
