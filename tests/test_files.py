"""Reading TSV/CSV/JSON(L): GLUE quirks and errors that name file and line."""

import json
import logging
from pathlib import Path

import pytest

from de3.data.files import read_rows
from de3.errors import De3Error


def test_tsv_with_bom_and_bare_quotes(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text('\ufeffQuality\ttext\n1\the said "hi\n0\tplain\n', encoding="utf-8")
    expected = [(2, {"Quality": "1", "text": 'he said "hi'}), (3, {"Quality": "0", "text": "plain"})]
    assert read_rows(path) == read_rows(path, literal_quotes=True) == expected


def test_a_tsv_written_by_pandas_reads_back_as_pandas_reads_it(tmp_path, caplog):
    import pandas

    texts = ['He said "hi"', "a tab\there", "two\nlines", '"quoted" at the start']
    path = tmp_path / "written.tsv"
    pandas.DataFrame({"text": texts, "label": [1, 0, 1, 0]}).to_csv(path, sep="\t", index=False)
    assert '"He said ""hi"""' in path.read_text()  # pandas quotes fields that hold a quote, a tab or a line break
    with caplog.at_level(logging.WARNING):
        rows = read_rows(path)
    assert [row["text"] for _, row in rows] == texts == list(pandas.read_csv(path, sep="\t")["text"])
    assert [line for line, _ in rows] == [2, 3, 4, 6]  # where each row starts
    assert caplog.text == ""


def test_a_tsv_whose_quotes_are_not_quoting_is_read_literally_with_a_warning(tmp_path, caplog):
    path = tmp_path / "hand_written.tsv"
    path.write_text('text\tlabel\n"Hi," she said.\t1\nplain\t0\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        rows = read_rows(path)
    assert rows == [(2, {"text": '"Hi," she said.', "label": "1"}), (3, {"text": "plain", "label": "0"})]
    [warning] = [record.getMessage() for record in caplog.records]
    assert warning.startswith(f"{path}:2: ") and warning.endswith("doubled); read with its quotes as text")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert read_rows(path, literal_quotes=True) == rows  # GLUE's files: quotes are text, no warning
    assert caplog.text == ""


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


CUSTOM = Path(__file__).parent / "data" / "custom"


@pytest.mark.parametrize(
    "name, encoding, expected",
    [
        ("tweets_latin1.csv", "latin-1", "Café au lait this morning, très bon!"),
        ("reviews_cp1252.csv", "cp1252", "Worth every €: the “deluxe” kit – superb"),
        ("reviews_utf8_bom_train.tsv", "utf-8", "a calm and clever film"),
    ],
)
def test_files_in_any_encoding_read_the_same_with_auto(name, encoding, expected):
    rows = read_rows(CUSTOM / name, encoding=encoding)
    assert expected in rows[0][1].values()
    assert not any(column.startswith("\ufeff") for column in rows[0][1])  # the BOM is not part of the header
    assert read_rows(CUSTOM / name, encoding="auto") == rows


def test_bytes_invalid_in_the_chosen_encoding_name_the_line(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes("text,label\n€5 well spent,pos\n".encode("cp1252") + b"bad \x81 byte,neg\n")
    with pytest.raises(De3Error, match=r"reviews\.csv:3: not valid cp1252 .*task\.encoding="):
        read_rows(path, encoding="cp1252")
    with pytest.raises(De3Error, match=r"reviews\.csv:2: not valid UTF-8"):
        read_rows(path)
    with pytest.raises(De3Error, match="unknown text encoding 'latin-9000'"):
        read_rows(path, encoding="latin-9000")


def warnings_of(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "name, encoding, expected",
    [
        ("desserts_latin1.csv", "latin-1", ["A naïve / crème brûlée, the best dessert in town", "Käsekuchen"]),
        ("menu_cp1252.csv", "cp1252", ["Worth every €: the “crème brûlée” was perfect – merci!"]),
    ],
)
def test_auto_reads_western_text_as_cp1252_or_latin1_before_guessing(name, encoding, expected, caplog):
    """Asked first, charset-normalizer reads the latin-1 file as cp1250 (ï as ď, è as č)."""
    with caplog.at_level(logging.INFO):
        rows = read_rows(CUSTOM / name, encoding="auto")
    assert rows == read_rows(CUSTOM / name, encoding=encoding)
    text = " ".join(row["text"] for _, row in rows)
    assert all(phrase in text for phrase in expected)
    assert f"detected text encoding {encoding}" in caplog.text and warnings_of(caplog) == []


def test_auto_guesses_other_encodings_with_a_warning(caplog):
    path = CUSTOM / "reviews_cp1251.csv"  # Cyrillic
    with caplog.at_level(logging.INFO):
        rows = read_rows(path, encoding="auto")
    assert rows == read_rows(path, encoding="cp1251")
    assert rows[1][1]["text"] == "Отличная книга: читается на одном дыхании"
    [warning] = warnings_of(caplog)
    assert "guessed cp1251" in warning and "name the encoding (task.encoding=...)" in warning


def test_auto_reads_utf16_by_its_byte_order_mark_without_a_warning(tmp_path, caplog):
    path = tmp_path / "excel_unicode_text.tsv"
    path.write_text("text\tlabel\nDas Mädchen ist nett\tpos\nschön\tneg\n", encoding="utf-16")
    with caplog.at_level(logging.INFO):
        rows = read_rows(path, encoding="auto")
    assert rows == read_rows(path, encoding="utf-16") and rows[0][1]["text"] == "Das Mädchen ist nett"
    assert "detected text encoding utf_16 by its byte order mark" in caplog.text and warnings_of(caplog) == []
