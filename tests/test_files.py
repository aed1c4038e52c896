"""Reading TSV/CSV/JSON(L): GLUE quirks and errors that name file and line."""

import json

import pytest

from de3.data.files import read_rows
from de3.errors import De3Error


def test_tsv_with_bom_and_bare_quotes(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text('\ufeffQuality\ttext\n1\the said "hi\n0\tplain\n', encoding="utf-8")
    assert read_rows(path) == [(2, {"Quality": "1", "text": 'he said "hi'}), (3, {"Quality": "0", "text": "plain"})]


def test_headerless_tsv_takes_given_names(tmp_path):
    path = tmp_path / "cola.tsv"
    path.write_text("gj04\t1\t\tA sentence.", encoding="utf-8")  # no final newline, as in CoLA dev
    assert read_rows(path, ["source", "label", "orig", "sentence"]) == [
        (1, {"source": "gj04", "label": "1", "orig": "", "sentence": "A sentence."})
    ]


def test_malformed_row_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("sentence\tlabel\nfine\t1\nbroken row without tab\n", encoding="utf-8")
    with pytest.raises(De3Error, match=r"bad\.tsv:3: malformed row with 1 fields, expected 2"):
        read_rows(path)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes(b"sentence\tlabel\nok\t1\ncaf\xe9\t0\n")
    with pytest.raises(De3Error, match=r"latin\.tsv:3: not valid UTF-8"):
        read_rows(path)


def test_csv_quoting_and_json_formats(tmp_path):
    csv_path = tmp_path / "a.csv"
    csv_path.write_text('text,label\n"hello, world",pos\n', encoding="utf-8")
    assert read_rows(csv_path) == [(2, {"text": "hello, world", "label": "pos"})]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "x", "label": 1}\n\n{"text": "y", "label": 0}\n', encoding="utf-8")
    assert [line for line, _ in read_rows(jsonl)] == [1, 3]
    js = tmp_path / "a.json"
    js.write_text(json.dumps([{"text": "x", "label": 1}]), encoding="utf-8")
    assert read_rows(js) == [(1, {"text": "x", "label": 1})]


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(De3Error, match="data file not found"):
        read_rows(tmp_path / "nope.tsv")
    with pytest.raises(De3Error, match="unknown file type"):
        read_rows(tmp_path / "data.parquet")
