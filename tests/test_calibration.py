"""The calibration split: a seeded, stratified slice of the training file, held out from
training, on which checkpoints are selected and the deployed thresholds chosen; dev is scored
at those thresholds (calibrated) beside its own best thresholds (oracle)."""

import json
import logging
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from de3.data.splits import load_splits
from de3.data.tasks import task_from_config
from de3.errors import De3Error
from de3.exit_cache import load_exit_caches
from de3.flops import layer_speedup
from de3.jobs import predict, train
from de3.metrics import make_metric
from de3.models.exit_rules import decide, get_rule, rule_indicator
from tests.conftest import compose_config, tiny_overrides
from tests.glue_fixtures import write_glue

CALIBRATED = ["task.calibration_fraction=0.1", "task.calibration_min_examples=16", "data.train_limit=24"]


def sst2(**fields):
    return task_from_config({"name": "sst2", **fields})


@pytest.fixture(scope="module")
def glue_80(tmp_path_factory) -> Path:
    """Fake GLUE with 80 training rows (room for a calibration split of 16)."""
    return write_glue(tmp_path_factory.mktemp("glue80"), n_train=80)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, glue_80):
    """A 3-layer tiny model trained on fake SST-2 with a calibration split, then swept."""
    folder = tmp_path_factory.mktemp("calibrated")
    overrides = [*tiny_overrides(glue_80), "task=sst2", "backbone.config_overrides.num_hidden_layers=3", *CALIBRATED]
    train(compose_config(overrides, folder))
    yield folder
    GlobalHydra.instance().clear()


def test_the_calibration_split_comes_first_among_the_eval_splits():
    spec = task_from_config(
        {"name": "mnli", "calibration_fraction": 0.1, "calibration_min_examples": 300, "split_seed": 7}
    )
    assert spec.eval_splits == ("calibration", "validation_matched", "validation_mismatched")
    assert spec.local.held_out == {"calibration": 0.1} and spec.local.held_out_minimum == {"calibration": 300}
    assert spec.local.split_seed == 7
    assert sst2().eval_splits == sst2(calibration_fraction=None).eval_splits == ("validation",)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"calibration_fraction": 1.5}, "task.calibration_fraction must lie between 0 and 1"),
        ({"calibration_fraction": 0.1, "calibration_min_examples": 0}, "calibration_min_examples must be at least 1"),
    ],
)
def test_bad_calibration_settings_stop_with_one_clear_message(fields, message):
    with pytest.raises(De3Error, match=message):
        sst2(**fields)


def test_custom_data_holds_out_calibration_beside_validation(tmp_path):
    rows = "text,label\n" + "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(100))
    (tmp_path / "train.csv").write_text(rows)
    fields = {"files": {"train": str(tmp_path / "train.csv")}, "label_names": ["a", "b"], "text_columns": ["text"]}
    spec = task_from_config({**fields, "validation_fraction": 0.2, "calibration_fraction": 0.1, "split_seed": 1})
    assert spec.eval_splits == ("calibration", "validation")
    parts = load_splits(spec, ["train", "calibration", "validation"], None)
    assert [len(parts[s]) for s in ("train", "calibration", "validation")] == [70, 10, 20]
    wheres = [{e.where for e in parts[s]} for s in parts]
    assert sum(map(len, wheres)) == len(set().union(*wheres)) == 100
    with pytest.raises(De3Error, match="leave nothing to train on"):
        task_from_config({**fields, "validation_fraction": 0.5, "calibration_fraction": 0.5})


def test_calibration_split_is_stratified_seeded_disjoint_and_at_least_its_minimum(glue_80):
    spec = sst2(calibration_fraction=0.1, calibration_min_examples=20, split_seed=3)
    parts = load_splits(spec, ["train", "calibration"], glue_80)
    calibration, rest = parts["calibration"], parts["train"]
    assert len(calibration) == 20  # 10% of 80 is 8, below the minimum
    assert Counter(e.label for e in calibration) == {0: 10, 1: 10}
    assert len(rest) == 60 and not {e.where for e in rest} & {e.where for e in calibration}
    again = load_splits(spec, ["calibration"], glue_80)["calibration"]
    assert [e.where for e in again] == [e.where for e in calibration]
    other_seed = load_splits(
        sst2(calibration_fraction=0.1, calibration_min_examples=20, split_seed=4), ["calibration"], glue_80
    )
    assert [e.where for e in other_seed["calibration"]] != [e.where for e in calibration]
    larger = load_splits(
        sst2(calibration_fraction=0.25, calibration_min_examples=1, split_seed=3), ["calibration"], glue_80
    )
    assert len(larger["calibration"]) == 20


def test_train_alone_is_the_training_file_without_the_calibration_rows(glue_80):
    """As `predict.split=train` loads it: the rows trained on, not the whole file."""
    spec = sst2(calibration_fraction=0.1, calibration_min_examples=20, split_seed=3)
    both = load_splits(spec, ["train", "calibration"], glue_80)
    alone = load_splits(spec, ["train"], glue_80)["train"]
    assert [e.where for e in alone] == [e.where for e in both["train"]] and len(alone) == 60


def test_a_file_too_small_for_the_minimum_keeps_half_for_training_and_says_so(glue_80, caplog):
    with caplog.at_level(logging.WARNING):
        parts = load_splits(
            sst2(calibration_fraction=0.1, calibration_min_examples=300), ["train", "calibration"], glue_80
        )
    assert [len(parts[s]) for s in ("train", "calibration")] == [72, 8]  # the fraction alone
    assert "has 80 rows" in caplog.text and "calibration 8 rows" in caplog.text
    parts = load_splits(sst2(calibration_fraction=0.1, calibration_min_examples=40), ["train", "calibration"], glue_80)
    assert [len(parts[s]) for s in ("train", "calibration")] == [40, 40]  # exactly half is still allowed


def test_checkpoints_are_selected_on_the_calibration_split(glue_80, tmp_path):
    cfg = compose_config([*tiny_overrides(glue_80), "task=sst2", *CALIBRATED], tmp_path)
    module = instantiate(cfg.model)
    module.trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    module.eval_scores = {"calibration": {"accuracy": [0.2, 0.4]}, "validation": {"accuracy": [0.9, 0.9]}}
    assert module.selection_score() == pytest.approx(0.3)


def test_training_records_the_split_and_thresholds_come_from_calibration(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["scores"]) == ["calibration", "validation"]
    assert json.loads((run_dir / "thresholds.json").read_text())["split"] == "calibration"
    rows = json.loads((run_dir / "data_split.json").read_text())
    calibration, trained = (set(next(iter(rows[s].values()))) for s in ("calibration", "train"))
    assert len(calibration) == 16 and not calibration & trained
    checkpoint = torch.load(Path(results["checkpoint"]), weights_only=True)
    assert checkpoint["hyper_parameters"]["task"]["calibration_fraction"] == 0.1


def test_dev_is_scored_at_the_thresholds_chosen_on_calibration(run_dir):
    """Recomputed from dev's cached logits with the rule functions, not read from the sweep rows."""
    cache = load_exit_caches(run_dir / "exit_cache.pt")["validation"]
    summary_md = (run_dir / "summary.md").read_text()
    _, deployed_table = summary_md.split("### validation at the thresholds chosen on calibration")
    deploy = json.loads((run_dir / "thresholds.json").read_text())["rules"]
    checked = 0
    for rule_name, entry in deploy.items():
        rule = get_rule(rule_name)
        indicator = rule_indicator(rule, cache.logits, cache.distances, entry["params"])
        for target, point in entry["thresholds"].items():
            if point is None:
                continue
            layers, answers = decide(rule, cache.logits, indicator, point["threshold"], False)
            cell = f"{100 * make_metric('accuracy', 2)(answers, cache.labels):.2f} ({layer_speedup(layers, 3):.2f}×)"
            assert f"| {rule_name} |" in deployed_table and cell in deployed_table, (rule_name, target, cell)
            checked += 1
    assert checked >= 3


def test_predicting_the_calibration_split_from_run_dir_reproduces_the_recorded_speedup(run_dir, glue_80, tmp_path):
    deploy = json.loads((run_dir / "thresholds.json").read_text())["rules"]["entropy"]["thresholds"]
    target, point = next((t, p) for t, p in deploy.items() if p is not None)
    cfg = compose_config(
        [
            *tiny_overrides(glue_80),
            "mode=predict",
            f"run_dir={run_dir}",
            "exit.rule=entropy",
            f"exit.target_speedup={target}",
            "predict.split=calibration",
        ],
        tmp_path,
    )
    assert predict(cfg) == point["speedup"]
