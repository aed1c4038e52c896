"""Tiny GLUE-layout TSV files (same headers, quirks and label values as the real ones)."""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "a gripping, funny film.",
    "dull and far too long.",
    "The cat sat on the mat.",
    "Nobody came to the party.",
    'it is "quoted" text',
    "Prices rose sharply in May.",
    "She reads books every night.",
    "The river flooded the town.",
]

# (folder, header or None, rows builder, split file names) for each task.
LABELS = {
    "cola": ["0", "1"],
    "sst2": ["0", "1"],
    "mrpc": ["0", "1"],
    "qqp": ["0", "1"],
    "mnli": ["entailment", "neutral", "contradiction"],
    "qnli": ["entailment", "not_entailment"],
    "rte": ["entailment", "not_entailment"],
    "wnli": ["0", "1"],
}


def _s(i: int) -> str:
    return SENTENCES[i % len(SENTENCES)]


def _labelled_rows(task: str, n: int) -> tuple[list[str] | None, list[list[str]]]:
    def label(i: int) -> str:
        return LABELS[task][i % len(LABELS[task])] if task != "stsb" else f"{(i % 6) * 0.8:.3f}"

    if task == "cola":
        return None, [["gj04", label(i), "", _s(i)] for i in range(n)]
    if task == "sst2":
        return ["sentence", "label"], [[_s(i), label(i)] for i in range(n)]
    if task == "mrpc":
        return ["\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"], [
            [label(i), str(100 + i), str(200 + i), _s(i), _s(i + 1)] for i in range(n)
        ]
    if task == "stsb":
        return (
            [
                "index",
                "genre",
                "filename",
                "year",
                "old_index",
                "source1",
                "source2",
                "sentence1",
                "sentence2",
                "score",
            ],
            [[str(i), "main", "f", "2012", str(i), "none", "none", _s(i), _s(i + 2), label(i)] for i in range(n)],
        )
    if task == "qqp":
        return ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], [
            [str(i), str(i), str(i + 1), _s(i), _s(i + 3), label(i)] for i in range(n)
        ]
    if task == "mnli":
        return ["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1", "gold_label"], [
            [str(i), str(i), f"{i}e", "fiction", _s(i), _s(i + 1), label(i), label(i)] for i in range(n)
        ]
    if task == "qnli":
        return ["index", "question", "sentence", "label"], [[str(i), _s(i), _s(i + 1), label(i)] for i in range(n)]
    return ["index", "sentence1", "sentence2", "label"], [[str(i), _s(i), _s(i + 1), label(i)] for i in range(n)]


def _test_rows(task: str, n: int) -> tuple[list[str], list[list[str]]]:
    header, rows = _labelled_rows(task, n)
    if task == "cola":
        return ["index", "sentence"], [[str(i), r[3]] for i, r in enumerate(rows)]
    label_at = {"mrpc": 0, "stsb": -1}.get(task, -1)
    header = list(header)
    del header[label_at]
    if task == "mrpc":
        header[0] = "index"
    for row in rows:
        del row[label_at]
    return header, rows


def _write(path: Path, header: list[str] | None, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


FOLDERS = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "qqp": "QQP",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
    "wnli": "WNLI",
}


def write_glue(root: Path, n_train: int = 24, n_eval: int = 10) -> Path:
    """Write train/dev/test files of all nine GLUE tasks under `root`; returns `root`."""
    for task, folder in FOLDERS.items():
        evals = ["dev_matched", "dev_mismatched"] if task == "mnli" else ["dev"]
        tests = ["test_matched", "test_mismatched"] if task == "mnli" else ["test"]
        _write(root / folder / "train.tsv", *_labelled_rows(task, n_train))
        for name in evals:
            _write(root / folder / f"{name}.tsv", *_labelled_rows(task, n_eval))
        for name in tests:
            _write(root / folder / f"{name}.tsv", *_test_rows(task, n_eval))
    return root
