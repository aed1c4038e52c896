"""The data module on every task: fixture files in the GLUE layout, custom files, real GLUE."""

import pytest
import torch

from de3.data.datamodule import TextTaskDataModule, seeded_subset
from de3.data.sources import load_split
from de3.data.tasks import GLUE_TASKS, task_from_config
from de3.errors import De3Error
from tests.conftest import GLUE_DIR, needs_glue
from tests.glue_fixtures import LABELS, SENTENCES


@pytest.mark.parametrize("name", sorted(GLUE_TASKS))
def test_every_glue_task_yields_padded_labelled_batches(name, glue_dir, char_tokenizer):
    task = GLUE_TASKS[name]
    dm = TextTaskDataModule(task, char_tokenizer, data_dir=glue_dir, source="local", batch_size=4, eval_batch_size=5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[0] == 4
    assert batch["attention_mask"][:, 0].all()  # every row starts with [CLS]
    lengths = batch["attention_mask"].sum(1)
    assert lengths.max() == batch["input_ids"].shape[1]  # padded to the longest in the batch
    if task.is_regression:
        assert batch["labels"].dtype == torch.float32
    else:
        assert batch["labels"].dtype == torch.int64
        assert set(batch["labels"].tolist()) <= set(range(task.num_outputs))
    # sentence pairs carry token type 1 on the second segment
    assert (batch["token_type_ids"].max() == 1) == (len(task.local.text_columns) == 2)
    loaders = dm.val_dataloader()
    assert len(loaders) == len(task.eval_splits)
    assert all(sum(len(b["labels"]) for b in loader) == 10 for loader in loaders)


def test_labels_are_mapped_to_the_registry_ids(glue_dir):
    examples = load_split(GLUE_TASKS["mnli"], "train", glue_dir, "local")
    names = GLUE_TASKS["mnli"].label_names
    assert [names[e.label] for e in examples[:3]] == LABELS["mnli"]
    assert examples[0].texts == (SENTENCES[0], SENTENCES[1])
    assert examples[0].where.endswith("MNLI/train.tsv:2")


def test_unlabelled_test_split_is_served_for_prediction(glue_dir, char_tokenizer):
    dm = TextTaskDataModule(GLUE_TASKS["mnli"], char_tokenizer, data_dir=glue_dir, source="local")
    dm.setup("predict")
    loaders = dm.predict_dataloader()
    assert len(loaders) == 2
    batch = next(iter(loaders[0]))
    assert "labels" not in batch and batch["input_ids"].shape[0] == 10


def test_train_limit_is_a_seeded_subset(glue_dir):
    examples = load_split(GLUE_TASKS["sst2"], "train", glue_dir, "local")
    first = seeded_subset(examples, 5, seed=1)
    assert first == seeded_subset(examples, 5, seed=1)
    assert first != seeded_subset(examples, 5, seed=2)
    assert len(first) == 5 and seeded_subset(examples, None, seed=1) == examples


def test_max_seq_length_truncates(glue_dir, char_tokenizer):
    dm = TextTaskDataModule(GLUE_TASKS["rte"], char_tokenizer, data_dir=glue_dir, source="local", max_seq_length=12)
    dm.setup("validate")
    assert next(iter(dm.val_dataloader()[0]))["input_ids"].shape[1] == 12


def test_custom_csv_task(tmp_path, char_tokenizer):
    (tmp_path / "train.csv").write_text("review,stars\ngreat,pos\nawful,neg\nfine,pos\n", encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text('{"review": "good", "stars": "pos"}\n{"review": "bad", "stars": 0}\n')
    task = task_from_config(
        {
            "name": "reviews",
            "files": {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "dev.jsonl")},
            "text_columns": ["review"],
            "label_column": "stars",
            "label_names": ["neg", "pos"],
        }
    )
    dm = TextTaskDataModule(task, char_tokenizer, batch_size=8)
    dm.setup("fit")
    assert [f["labels"] for f in dm.datasets["train"]] == [1, 0, 1]
    assert next(iter(dm.val_dataloader()[0]))["labels"].tolist() == [1, 0]


def test_bad_data_errors_name_the_place(tmp_path, glue_dir):
    with pytest.raises(De3Error, match=r"task 'rte', split 'train': file not found: .*/nowhere/RTE/train.tsv"):
        load_split(GLUE_TASKS["rte"], "train", tmp_path / "nowhere", "local")
    bad = tmp_path / "RTE"
    bad.mkdir()
    (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tcontradiction\n")
    with pytest.raises(De3Error, match=r"RTE/train.tsv:3: label 'contradiction' is outside the label set"):
        load_split(GLUE_TASKS["rte"], "train", tmp_path, "local")
    (bad / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(De3Error, match="split 'validation' is empty"):
        load_split(GLUE_TASKS["rte"], "validation", tmp_path, "local")
    (bad / "dev.tsv").write_text("index\tpremise\thypothesis\tlabel\n0\ta\tb\t0\n")
    with pytest.raises(De3Error, match=r"missing text column\(s\) \['sentence1', 'sentence2'\]"):
        load_split(GLUE_TASKS["rte"], "validation", tmp_path, "local")


@needs_glue
@pytest.mark.parametrize(
    "name, train_rows, dev_rows",
    [
        ("cola", 8551, 1043),
        ("sst2", 67349, 872),
        ("mrpc", 3668, 408),
        ("stsb", 5749, 1500),
        ("rte", 2490, 277),
        ("wnli", 635, 71),
    ],
)
def test_real_glue_files_read_completely(name, train_rows, dev_rows):
    task = GLUE_TASKS[name]
    assert len(load_split(task, "train", GLUE_DIR, "local")) == train_rows
    dev = load_split(task, "validation", GLUE_DIR, "local")
    assert len(dev) == dev_rows and all(e.label is not None for e in dev)
    assert all(e.label is None for e in load_split(task, "test", GLUE_DIR, "local"))
