"""Reading tabular text files (TSV, CSV, JSON, JSON Lines) with errors that name file and line."""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def _non_ascii(text: str) -> str:
    """The most frequent non-ASCII characters of `text`, for a log line a person can check."""
    return " ".join(c for c, _ in Counter(c for c in text if not c.isascii()).most_common(12))


def _detect(path: Path, data: bytes, setting: str) -> str:
    """UTF-8 if the bytes are valid UTF-8; else cp1252 if they read as Western European text
    without a trace of mess (charset-normalizer's measure), named latin-1 where the two read the
    same: they differ only in bytes 0x80–0x9F, cp1252's punctuation (€ “ ” – …) and latin-1's C1
    control characters, which real text does not contain; else the UTF-16/32 a byte order mark
    names; else charset-normalizer's statistical guess, with a warning. (Asked first, that guess
    reads short Western texts with few accents as cp1250, cp1251 or iso8859_10: ä as д.)"""
    from charset_normalizer import from_bytes  # only `auto` needs it

    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    western = "cp1252" if re.search(rb"[\x80-\x9f]", data) else "latin-1"
    match = from_bytes(data, cp_isolation=[western]).best()
    if match is not None and match.chaos == 0:
        log.info("%s: detected text encoding %s (non-ASCII characters: %s)", path, western, _non_ascii(str(match)))
        return western
    best = from_bytes(data).best()
    if best is None:
        raise De3Error(f"{path}: could not detect the text encoding; name it ({setting}=latin-1, cp1252, ...)")
    if best.bom:  # UTF-16 or UTF-32 saying so (Excel's "Unicode text", for one)
        log.info("%s: detected text encoding %s by its byte order mark", path, best.encoding)
        return best.encoding
    log.warning(
        "%s: neither UTF-8 nor Western European text; guessed %s (%s; non-ASCII characters: %s): "
        "if these read wrong, name the encoding (%s=...)",
        path,
        best.encoding,
        best.language,
        _non_ascii(str(best)),
        setting,
    )
    return best.encoding


def decode(path: Path, encoding: str = "utf-8", setting: str = "task.encoding") -> str:
    """The file's text in `encoding` (a Python codec, or "auto" to detect it), without a byte
    order mark; bytes invalid in that encoding are a De3Error naming the line. `setting` is the
    config key that names the encoding, for the messages."""
    data = path.read_bytes()
    codec = _detect(path, data, setting) if check_encoding(encoding) == "auto" else encoding
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        name = "UTF-8" if codecs.lookup(codec).name == "utf-8" else codec
        raise De3Error(
            f"{path}:{line}: not valid {name} ({err.reason} at byte {err.start}); "
            f"name the file's encoding ({setting}=latin-1, cp1252, ... or auto)"
        ) from None
    return text.removeprefix("\ufeff")


def _parse_delimited(path: Path, text: str, column_names: Sequence[str] | None, **dialect: Any) -> list[Row]:
    """The rows of a delimited text read by `csv.reader(**dialect)`, each with the line it starts
    on; a row whose field count differs from the header's, or quoting the reader refuses (with
    `strict`), is a De3Error naming its line."""
    reader = csv.reader(io.StringIO(text, newline=""), **dialect)
    header = list(column_names) if column_names is not None else next(reader, None)
    if header is None:
        return []
    rows = []
    while True:
        line = reader.line_num + 1  # a quoted field may span lines
        try:
            fields = next(reader, None)
        except csv.Error as err:
            raise De3Error(
                f"{path}:{line}: {err} (CSV quoting: a field that starts with a quote ends with one, its own quotes "
                "doubled)"
            ) from None
        if fields is None:
            return rows
        if not fields:
            continue
        if len(fields) != len(header):
            raise De3Error(
                f"{path}:{line}: malformed row with {len(fields)} fields, expected {len(header)} ({', '.join(header)})"
            )
        rows.append((line, dict(zip(header, fields))))


def _read_tsv(path: Path, text: str, column_names: Sequence[str] | None, literal_quotes: bool) -> list[Row]:
    """A TSV's rows, read as pandas, Excel and Python's csv module write TSV: a field that holds
    a quote, tab or line break enclosed in quotes, its own quotes doubled. A file whose quotes
    do not parse so is read with its quotes as text, with a warning; with `literal_quotes`
    (GLUE's files, whose texts hold bare quotes) it is read so at once."""
    literal = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    if literal_quotes:
        return _parse_delimited(path, text, column_names, **literal)
    try:
        return _parse_delimited(path, text, column_names, delimiter="\t", strict=True)
    except De3Error as quoting_error:
        rows = _parse_delimited(path, text, column_names, **literal)  # a malformed file fails here too
        log.warning("%s; read with its quotes as text", quoting_error)
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


def read_rows(
    path: str | Path,
    column_names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    literal_quotes: bool = False,
    setting: str = "task.encoding",
) -> list[Row]:
    """Read every data row of a TSV/CSV/JSON/JSONL file as (line number, {column: value}).

    The format follows the file extension. `column_names` is for delimited files without a
    header row; `encoding` and `setting` are as in `decode`; `literal_quotes` reads a TSV's
    quotes as text (`_read_tsv`). Raises `De3Error` naming the file (and line) for a missing
    file, bytes invalid in the encoding, or a row whose field count differs from the header's.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise De3Error(f"{path}: unknown file type {path.suffix!r}; use one of {sorted(FORMATS)}")
    if not path.is_file():
        raise De3Error(f"data file not found: {path}")
    text = decode(path, encoding, setting)
    if fmt in ("json", "jsonl"):
        return _read_json(path, text, lines=fmt == "jsonl")
    if fmt == "tsv":
        return _read_tsv(path, text, column_names, literal_quotes)
    return _parse_delimited(path, text, column_names, delimiter=",")


def columns_of(rows: Sequence[Row]) -> set[str]:
    """Every column some row has (a JSON record may leave out keys that others have)."""
    return set().union(*(row for _, row in rows))
