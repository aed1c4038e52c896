"""Your own data as people bring it: one labelled file in any encoding, labels found in the
data, empty rows, duplicates and leakage (example files in tests/data/custom/)."""

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from de3.data.custom import complete_custom_task
from de3.data.datamodule import TextTaskDataModule
from de3.data.held_out import strata, stratified_split
from de3.data.labels import infer_label_names
from de3.data.splits import load_splits
from de3.data.tasks import task_from_config
from de3.errors import De3Error
from de3.exit_cache import load_exit_caches
from de3.results import per_class_scores
from tests.glue_fixtures import write_glue

CUSTOM = Path(__file__).parent / "data" / "custom"
TWEETS = CUSTOM / "tweets_latin1.csv"  # 45 rows, 3 labels, 3 repeats, 2 empty rows, latin-1
TWEET_LABELS = ["negative", "neutral", "positive"]


def tweets_task(**fields):
    base = {"files": {"train": str(TWEETS)}, "encoding": "latin-1", "label_column": "sentiment"}
    return task_from_config({**base, "label_names": TWEET_LABELS, "text_columns": ["text"], **fields})


def test_held_out_split_is_seeded_stratified_and_disjoint():
    labels = [0] * 50 + [1] * 30 + [2] * 20
    parts = stratified_split(labels, {"validation": 0.1, "test": 0.2}, seed=7)
    assert sorted(sum(parts.values(), [])) == list(range(100))
    assert {name: Counter(labels[i] for i in rows) for name, rows in parts.items() if name != "train"} == {
        "validation": {0: 5, 1: 3, 2: 2},
        "test": {0: 10, 1: 6, 2: 4},
    }
    assert stratified_split(labels, {"validation": 0.1, "test": 0.2}, seed=7) == parts
    assert stratified_split(labels, {"validation": 0.1, "test": 0.2}, seed=8) != parts


def test_regression_targets_are_stratified_by_quantile():
    targets = [float(v) for v in range(100, 0, -1)]
    bins = strata(targets, regression=True)
    assert Counter(bins) == dict.fromkeys(range(10), 10)
    assert bins[0] == 9 and bins[-1] == 0  # the largest target is in the top bin
    validation = stratified_split(bins, {"validation": 0.2}, seed=0)["validation"]
    assert Counter(bins[i] for i in validation) == dict.fromkeys(range(10), 2)


def test_a_regression_file_is_split_across_its_range(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps({"text": f"sentence {i}", "score": i / 10}) + "\n" for i in range(50)))
    config = {"files": {"train": str(path)}, "text_columns": ["text"], "label_column": "score", "regression": True}
    task = task_from_config({**config, "validation_fraction": 0.2})
    validation = sorted(e.label for e in load_splits(task, ["validation"], None)["validation"])
    assert len(validation) == 10 and validation[0] < 0.5 and validation[-1] >= 4.5  # one per tenth of the range


def test_label_names_are_the_sorted_distinct_values():
    assert infer_label_names(["pos", "neg", "pos", "neutral"], "f") == ("neg", "neutral", "pos")
    assert infer_label_names(["10", "2", "1", "2"], "f") == ("1", "2", "10")
    with pytest.raises(De3Error, match=r"f: 3 distinct label values .* set task\.regression=true"):
        infer_label_names(["0.5", "1.25", "3"], "f")
    with pytest.raises(De3Error, match=r"101 distinct label values .* task\.regression=true"):
        infer_label_names([f"class{i}" for i in range(101)], "f")
    with pytest.raises(De3Error, match="every row has the label 'pos'"):
        infer_label_names(["pos", "pos"], "f")


def test_empty_rows_are_skipped_with_their_lines_or_stop_the_run(caplog):
    with caplog.at_level(logging.WARNING):
        examples = load_splits(tweets_task(), ["train", "validation"], None)
    assert "tweets_latin1.csv: skipped 2 row(s) with an empty text or label, at line(s) 7, 27" in caplog.text
    assert sum(len(e) for e in examples.values()) == 43
    with pytest.raises(De3Error, match=r"tweets_latin1\.csv:7: empty text in column 'text' \(task\.on_bad_rows=skip"):
        load_splits(tweets_task(on_bad_rows="error"), ["train"], None)


def test_glue_stops_at_an_empty_row_unless_told_to_skip(tmp_path):
    glue = write_glue(tmp_path)
    path = glue / "RTE" / "train.tsv"
    path.write_text(path.read_text() + "99\t\tb\tentailment\n")
    with pytest.raises(De3Error, match=r"RTE/train\.tsv:\d+: empty text in column 'sentence1'"):
        load_splits(task_from_config({"name": "rte"}), ["train"], glue, "local")
    skipping = task_from_config({"name": "rte", "on_bad_rows": "skip"})
    assert all(e.texts[0] for e in load_splits(skipping, ["train"], glue, "local")["train"])


def test_one_file_is_split_the_same_way_by_the_same_seed():
    task = tweets_task(validation_fraction=0.2, test_fraction=0.2, split_seed=3)
    assert task.eval_splits == ("validation",) and task.test_splits == ("test",)
    parts = load_splits(task, ["train", "validation", "test"], None)
    wheres = {split: {e.where for e in examples} for split, examples in parts.items()}
    assert not (wheres["train"] & wheres["validation"]) and not (wheres["validation"] & wheres["test"])
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [25, 9, 9]
    assert all(e.label is not None for e in parts["test"])  # a held-out test split keeps its labels
    again = load_splits(task, ["validation"], None)["validation"]
    assert again == parts["validation"]
    other_seed = tweets_task(validation_fraction=0.2, test_fraction=0.2, split_seed=4)
    assert load_splits(other_seed, ["validation"], None)["validation"] != again


def test_repeats_and_leakage_are_reported_and_dropped_with_deduplicate(caplog, char_tokenizer):
    train, dev = (str(CUSTOM / f"reviews_utf8_bom_{name}.tsv") for name in ("train", "dev"))
    config = {"files": {"train": train, "validation": dev}, "text_columns": ["sentence"], "label_names": ["neg", "pos"]}
    with caplog.at_level(logging.WARNING):
        kept = load_splits(task_from_config(config), ["train", "validation"], None)
    assert len(kept["train"]) == 8
    assert "train: 2 row(s) repeat an earlier train text exactly, kept (task.deduplicate=true" in caplog.text
    assert "reviews_utf8_bom_train.tsv:4 = " in caplog.text and "'a calm and clever film'" in caplog.text
    assert "leakage: 2 train row(s) have a text that is also in validation (2 text(s))" in caplog.text
    dm = TextTaskDataModule(task_from_config({**config, "deduplicate": True}), char_tokenizer)
    dm.setup("fit")
    lines = [int(where.rsplit(":", 1)[1]) for where in dm.origins["train"]]
    assert lines == [2, 3, 5, 6]  # repeats (4, 7) and texts also in dev (8, 9) dropped
    assert len(dm.datasets["validation"]) == 4


def test_missing_columns_name_the_columns_there_are():
    expected = r"missing text column\(s\) \['tweet'\]; columns are \['confidence', 'sentiment', 'text', 'tweet_id'\]"
    with pytest.raises(De3Error, match=expected):
        load_splits(tweets_task(text_columns=["tweet"]), ["train"], None)
    with pytest.raises(De3Error, match=r"missing label column 'label'; columns are"):
        load_splits(tweets_task(label_column="label"), ["train"], None)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"files": {"train": "t", "validation": "v"}, "validation_fraction": 0.1}, "files.validation or task.vali"),
        ({"validation_fraction": 1.5}, "between 0 and 1"),
        ({"validation_fraction": 0.6, "test_fraction": 0.5}, "leave nothing to train on"),
        ({"encoding": "klingon"}, "unknown text encoding 'klingon'"),
        ({"on_bad_rows": "ignore"}, "on_bad_rows must be one of"),
        ({"regression": True}, "not both"),
    ],
)
def test_custom_config_errors(fields, message):
    with pytest.raises(De3Error, match=message):
        tweets_task(**fields)


def test_one_latin1_file_without_label_names_trains_and_predicts_label_names(tiny_config, tmp_path):
    """The README's one-command example (through `run`, as run.py dispatches it: the label names
    are not known until the file is read), then predictions that carry the label names."""
    from de3.jobs import predict, run

    command = [
        "task=custom",
        f"task.files.train={TWEETS}",
        "task.encoding=latin-1",
        "task.label_column=sentiment",
        "data.batch_size=32",  # one epoch within debug=fast's 4 steps, so validation runs
    ]
    run(tiny_config(*command))
    results = json.loads((tmp_path / "results.json").read_text())
    checkpoint = torch.load(results["checkpoint"], weights_only=True)
    assert checkpoint["hyper_parameters"]["task"]["label_names"] == TWEET_LABELS
    assert results["labels"] == TWEET_LABELS  # with the final exit's scores per class, as the exit cache gives them
    cache = load_exit_caches(tmp_path / "exit_cache.pt")["validation"]
    predicted = cache.logits[-1].argmax(-1)
    assert results["confusion_matrix"] == {
        "validation": confusion_matrix(cache.labels, predicted, labels=[0, 1, 2]).tolist()
    }
    assert results["per_class"]["validation"]["negative"]["support"] == int((cache.labels == 0).sum())
    split = json.loads((tmp_path / "data_split.json").read_text())
    train_lines, validation_lines = split["train"][str(TWEETS)], split["validation"][str(TWEETS)]
    assert len(validation_lines) == 5 and not set(train_lines) & set(validation_lines)
    assert 7 not in train_lines + validation_lines  # the empty row

    base = ["mode=predict", f"ckpt_path={results['checkpoint']}", "exit.rule=entropy", "exit.threshold=0.5"]
    predict(tiny_config(*base, "predict.split=validation"))
    rows = (tmp_path / "predictions.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == [f"{TWEETS}:{line}" for line in validation_lines]
    assert {row.split(",")[1] for row in rows} <= set(TWEET_LABELS)

    latin1 = CUSTOM / "desserts_latin1.csv"  # a new file in the run's encoding (task.encoding), then in another
    predict(tiny_config(*base, f"predict.input={latin1}"))
    assert len((tmp_path / "predictions.csv").read_text(encoding="utf-8").splitlines()) == 1 + 8
    with pytest.raises(
        De3Error, match=r"desserts_latin1\.csv:2: not valid UTF-8 .*\(predict\.encoding=latin-1, cp1252"
    ):
        predict(tiny_config(*base, f"predict.input={latin1}", "predict.encoding=utf-8"))
    predict(tiny_config(*base, f"predict.input={CUSTOM / 'reviews_cp1251.csv'}", "predict.encoding=auto"))
    assert len((tmp_path / "predictions.csv").read_text(encoding="utf-8").splitlines()) == 1 + 6


def test_the_config_gets_absolute_paths_and_the_labels_found(monkeypatch, caplog):
    from omegaconf import OmegaConf

    from de3.data.custom import complete_custom_task

    monkeypatch.chdir(CUSTOM)
    fields = {"encoding": "latin-1", "text_columns": ["text"], "label_column": "sentiment", "label_names": None}
    task_cfg = OmegaConf.create({"files": {"train": TWEETS.name}, **fields})
    with caplog.at_level(logging.INFO):
        complete_custom_task(task_cfg)
    assert task_cfg.files.train == str(TWEETS) and list(task_cfg.label_names) == TWEET_LABELS
    assert "negative (15 rows), neutral (13 rows), positive (15 rows)" in caplog.text


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text,label\n" + "".join(f"{text},{label}\n" for text, label in rows), encoding="utf-8")
    return path


def test_a_numeric_label_that_training_never_saw_is_refused(tmp_path):
    train = write_csv(tmp_path / "train.csv", [(f"row {i}", 1 + i % 2) for i in range(6)])
    dev = write_csv(tmp_path / "dev.csv", [("a", 2), ("b", 1), ("c", 0)])
    config = {"files": {"train": str(train), "validation": str(dev)}, "text_columns": ["text"], "label_names": None}
    task_cfg = OmegaConf.create(config)
    complete_custom_task(task_cfg)
    assert list(task_cfg.label_names) == ["1", "2"]
    with pytest.raises(
        De3Error, match=r"dev\.csv:4: label '0' is outside the label set of task 'custom': \['1', '2'\]$"
    ):
        load_splits(task_from_config(task_cfg), ["validation"], None)  # not read as index 0, class "1"


def test_custom_without_a_training_file_says_what_to_set(tiny_config):
    from de3.jobs import run

    with pytest.raises(De3Error, match=r"task\.files\.train is not set: name your labelled CSV, TSV, JSON or JSONL"):
        run(tiny_config("task=custom"))


def test_jsonl_records_may_leave_out_the_label(tmp_path, caplog):
    path = tmp_path / "reviews.jsonl"
    records = [{"text": "not rated yet"}] + [{"text": f"review {i}", "label": ("neg", "pos")[i % 2]} for i in range(20)]
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    task = task_from_config({"files": {"train": str(path)}, "text_columns": ["text"], "label_names": ["neg", "pos"]})
    with caplog.at_level(logging.WARNING):
        parts = load_splits(task, ["train", "validation"], None)
    assert {e.where for e in parts["train"] + parts["validation"]} == {f"{path}:{line}" for line in range(2, 22)}
    assert "reviews.jsonl: skipped 1 row(s) with an empty text or label, at line(s) 1" in caplog.text


def test_labels_that_differ_only_in_case_and_single_row_classes_are_warned_about(tmp_path, caplog):
    labels = ["negative"] * 3 + ["Negative"] * 2 + ["positive"] * 3 + ["meh"]
    path = write_csv(tmp_path / "moods.csv", [(f"text {i}", label) for i, label in enumerate(labels)])
    task_cfg = OmegaConf.create({"files": {"train": str(path)}, "text_columns": ["text"], "label_names": None})
    with caplog.at_level(logging.WARNING):
        complete_custom_task(task_cfg)
    assert list(task_cfg.label_names) == ["Negative", "meh", "negative", "positive"]
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [
        f"{path}, column 'label': labels 'Negative' and 'negative' differ only in case, so they are 2 different "
        "classes; if they mean one, write them alike in the file",
        f"{path}, column 'label': 1 class(es) with a single row: 'meh'. The model cannot learn a class from one "
        "example, nor be scored on it; add rows, or merge or drop the class",
    ]


def test_per_class_scores_are_scikit_learns():
    true = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]  # class 1 is never predicted, class 4 never occurs
    predicted = [0, 2, 2, 0, 2, 2, 2, 0, 4, 3]
    names = ["a", "b", "c", "d", "e"]
    per_class = per_class_scores(names, confusion_matrix(true, predicted, labels=range(5)).tolist())
    expected = zip(*precision_recall_fscore_support(true, predicted, labels=range(5), zero_division=0))
    assert per_class == {
        name: {"precision": pytest.approx(p), "recall": pytest.approx(r), "f1": pytest.approx(f), "support": n}
        for name, (p, r, f, n) in zip(names, expected)
    }
