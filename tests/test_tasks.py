"""The task registry: labels, metrics, custom tasks."""

import pytest

from de3.data.tasks import GLUE_TASKS, task_from_config
from de3.errors import De3Error


def test_all_nine_glue_tasks_are_registered():
    assert sorted(GLUE_TASKS) == ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli"]
    assert GLUE_TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert GLUE_TASKS["mnli"].local.files["validation_matched"] == "MNLI/dev_matched.tsv"
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_outputs == 1
    assert GLUE_TASKS["cola"].main_metric == "mcc" and GLUE_TASKS["mrpc"].metrics == ("f1", "accuracy")


def test_labels_by_name_or_index_and_out_of_set():
    rte = GLUE_TASKS["rte"]
    assert rte.encode_label("not_entailment", "x") == 1
    assert rte.encode_label("0", "x") == 0
    with pytest.raises(De3Error, match=r"f\.tsv:7: label 'maybe' is outside the label set of task 'rte'"):
        rte.encode_label("maybe", "f.tsv:7")
    with pytest.raises(De3Error, match="outside the label set"):
        GLUE_TASKS["sst2"].encode_label("2", "x")
    assert GLUE_TASKS["stsb"].encode_label("3.800", "x") == pytest.approx(3.8)
    with pytest.raises(De3Error, match="is not a number"):
        GLUE_TASKS["stsb"].encode_label("high", "x")


def test_unknown_task_is_a_clear_error():
    with pytest.raises(De3Error, match="unknown task 'imdb'"):
        task_from_config({"name": "imdb"})


def test_custom_task_from_config():
    spec = task_from_config(
        {
            "name": "reviews",
            "files": {"train": "t.csv", "validation": "v.csv", "test": "x.csv"},
            "text_columns": ["text"],
            "label_names": ["neg", "pos"],
        }
    )
    assert spec.eval_splits == ("validation",) and spec.test_splits == ("test",)
    assert spec.metrics == ("accuracy",) and spec.num_outputs == 2
    regression = task_from_config(
        {"files": {"train": "t", "validation": "v"}, "text_columns": ["a", "b"], "regression": True}
    )
    assert regression.is_regression and regression.metrics == ("spearman", "pearson")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"files": {"validation": "v"}, "text_columns": ["x"], "label_names": ["a", "b"]}, "files.train is not set"),
        (
            {"files": {"train": "t", "validation": "v"}, "text_columns": [], "label_names": ["a", "b"]},
            "one or two columns",
        ),
        ({"files": {"train": "t", "validation": "v"}, "text_columns": ["x"]}, "no label names yet"),
        (
            {
                "files": {"train": "t", "validation": "v"},
                "text_columns": ["x"],
                "label_names": ["a", "b"],
                "metrics": ["bleu"],
            },
            "unknown metric",
        ),
    ],
)
def test_custom_task_errors(bad, message):
    with pytest.raises(De3Error, match=message):
        task_from_config(bad)
