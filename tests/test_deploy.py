"""Deploying a trained run: `thresholds.json` carries its checkpoint, split and rule parameters,
and `mode=predict run_dir=...` (or `EarlyExitPredictor.from_run`) reproduces the sweep."""

import csv
import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from de3.errors import De3Error, find_user_error
from de3.exit_cache import load_exit_caches
from de3.jobs import build_predictor, predict, sweep, train
from de3.models.exit_rules import decide, get_rule, rule_indicator
from de3.predictor import EarlyExitPredictor
from tests.conftest import compose_config, tiny_overrides

# Parameters other than the config's defaults (dge window 1, pcee patience 2): a predictor
# that fell back to the defaults would not reproduce the sweep.
SWEPT = ["exit.params.dge.window=2", "exit.params.pcee.patience=1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, glue_dir):
    """A trained and swept 3-layer tiny model on fake RTE (10 validation examples)."""
    folder = tmp_path_factory.mktemp("run")
    train(
        compose_config(
            [*tiny_overrides(glue_dir), "task=rte", "backbone.config_overrides.num_hidden_layers=3", *SWEPT], folder
        )
    )
    yield folder
    GlobalHydra.instance().clear()


@pytest.fixture
def config(tmp_path, glue_dir):
    """overrides → a `mode=predict` (or other) config whose outputs go to tmp_path."""
    return lambda *overrides: compose_config([*tiny_overrides(glue_dir), *overrides], tmp_path)


def recorded(run_dir):
    return json.loads((run_dir / "thresholds.json").read_text())


def reached(run_dir, rule):
    """(target, {threshold, speedup}) for every target speed-up the sweep reached with `rule`."""
    return [(t, p) for t, p in recorded(run_dir)["rules"][rule]["thresholds"].items() if p is not None]


def exit_layers_in(path: Path) -> list[int]:
    with path.open(newline="") as handle:
        return [int(row["exit_layer"]) for row in csv.DictReader(handle)]


def test_thresholds_json_records_checkpoint_split_length_and_params(run_dir):
    deploy = recorded(run_dir)
    best = Path(json.loads((run_dir / "results.json").read_text())["checkpoint"])
    assert deploy["checkpoint"]["path"] == str(best.relative_to(run_dir)) == f"checkpoints/{best.name}"
    assert deploy["checkpoint"]["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert deploy["split"] == "validation" and deploy["max_seq_length"] == 128
    assert deploy["rules"]["dge"]["params"] == {"divergence": "js", "window": 2}
    assert deploy["rules"]["pcee"]["params"] == {"patience": 1}


@pytest.mark.parametrize("rule", ["entropy", "pcee", "dge"])
def test_predicting_the_swept_split_from_run_dir_reproduces_the_sweep(rule, run_dir, config, tmp_path):
    cache = load_exit_caches(run_dir / "exit_cache.pt")["validation"]
    params = recorded(run_dir)["rules"][rule]["params"]
    points = reached(run_dir, rule)
    assert points  # every rule here reaches at least 1.5×
    for target, point in points:
        cfg = config(
            "mode=predict",
            f"run_dir={run_dir}",
            f"exit.rule={rule}",
            f"exit.target_speedup={target}",
            "predict.split=validation",
            "data.eval_batch_size=4",
        )
        assert predict(cfg) == point["speedup"]  # exactly the recorded speed-up ratio
        indicator = rule_indicator(get_rule(rule), cache.logits, cache.distances, params)
        simulated, _ = decide(get_rule(rule), cache.logits, indicator, point["threshold"], False)
        assert exit_layers_in(tmp_path / "predictions.csv") == simulated.tolist()


def test_recorded_params_are_used_unless_the_command_line_sets_them(run_dir, config, caplog):
    (target, point), *_ = reached(run_dir, "dge")
    base = ["mode=predict", f"run_dir={run_dir}", "exit.rule=dge", f"exit.target_speedup={target}"]
    with caplog.at_level(logging.WARNING):
        predictor = build_predictor(config(*base))
    assert predictor.params == {"divergence": "js", "window": 2} and predictor.threshold == point["threshold"]
    assert "no longer means" not in caplog.text
    with caplog.at_level(logging.WARNING):
        predictor = build_predictor(config(*base, "exit.params.dge.window=1"))
    assert predictor.params == {"divergence": "js", "window": 1}
    assert (
        f"threshold {point['threshold']:.6g} no longer means the recorded {point['speedup']:.2f}× speed-up"
        in caplog.text
    )
    assert build_predictor(config(*base, "data.max_seq_length=16")).max_seq_length == 16
    assert build_predictor(config(*base)).max_seq_length == 128


def test_a_checkpoint_other_than_the_recorded_one_is_refused_with_a_target(run_dir, config, tmp_path):
    recorded_checkpoint = run_dir / recorded(run_dir)["checkpoint"]["path"]
    other = tmp_path / "checkpoints" / "other.ckpt"
    other.parent.mkdir()
    state = torch.load(recorded_checkpoint, weights_only=True)
    next(iter(state["state_dict"].values())).add_(1.0)
    torch.save(state, other)
    shutil.copy(run_dir / "thresholds.json", tmp_path / "thresholds.json")  # as if in the same run folder
    (target, _), *_ = reached(run_dir, "entropy")
    for where in (f"ckpt_path={other}", f"run_dir={run_dir} ckpt_path={other}"):
        cfg = config("mode=predict", *where.split(), "exit.rule=entropy", f"exit.target_speedup={target}")
        with pytest.raises(De3Error, match=f"{other} is not the checkpoint the thresholds in .* were computed on"):
            build_predictor(cfg)
    # a threshold given by hand makes no claim about a speed-up: any checkpoint may take it
    assert build_predictor(config("mode=predict", f"ckpt_path={other}", "exit.rule=entropy", "exit.threshold=0.5"))
    cfg = config(
        "mode=predict", f"ckpt_path={recorded_checkpoint}", "exit.rule=entropy", f"exit.target_speedup={target}"
    )
    assert build_predictor(cfg).params == {}


def test_from_run_api(run_dir, caplog):
    (target, point), *_ = reached(run_dir, "pcee")
    predictor = EarlyExitPredictor.from_run(run_dir, "pcee", target_speedup=float(target), batch_size=4)
    assert (predictor.threshold, predictor.params, predictor.max_seq_length) == (
        point["threshold"],
        {"patience": 1},
        128,
    )
    out = predictor.predict([("A man sleeps.", "Someone rests.")])
    assert out.exit_layer.shape == (1,)
    with caplog.at_level(logging.WARNING):
        overridden = EarlyExitPredictor.from_run(run_dir, "pcee", target_speedup=float(target), params={"patience": 2})
    assert overridden.params == {"patience": 2} and "no longer means" in caplog.text
    assert EarlyExitPredictor.from_run(run_dir, "pcee", threshold=0.5).params == {"patience": 1}
    with pytest.raises(De3Error, match="no thresholds.json at"):
        EarlyExitPredictor.from_run(run_dir / "checkpoints", "pcee", target_speedup=1.5)


def test_sweep_from_run_dir_sweeps_the_recorded_checkpoint(run_dir, config, tmp_path):
    sweep(config("mode=sweep", f"run_dir={run_dir}"))  # the recorded parameters, not the config's
    again = json.loads((tmp_path / "thresholds.json").read_text())
    original = recorded(run_dir)
    assert again["checkpoint"] == {
        "path": str(run_dir / original["checkpoint"]["path"]),  # outside this run folder: absolute
        "sha256": original["checkpoint"]["sha256"],
    }
    assert again["rules"] == original["rules"]
    sweep(config("mode=sweep", f"run_dir={run_dir}", "exit.params.dge.window=1"))
    rules = json.loads((tmp_path / "thresholds.json").read_text())["rules"]
    assert rules["dge"]["params"] == {"divergence": "js", "window": 1} and rules["pcee"] == original["rules"]["pcee"]
    with pytest.raises(De3Error, match="mode=sweep needs run_dir=<run folder> or ckpt_path="):
        sweep(config("mode=sweep"))


def test_predict_an_input_file_and_bad_input(run_dir, config, tmp_path):
    inputs = tmp_path / "pairs.txt"
    inputs.write_text("A man sleeps.\tSomeone rests.\nIt rains.\tThe street is wet.\n", encoding="utf-8")
    base = ["mode=predict", f"run_dir={run_dir}", "exit.rule=entropy"]
    predictor = build_predictor(config(*base, "exit.threshold=0.9999"))
    speedup = predict(config(*base, f"predict.input={inputs}", "exit.threshold=0.9999"))
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0] == "input,prediction,probability,exit_layer" and len(rows) == 3
    assert rows[1].startswith(f"{inputs}:1,") and rows[1].split(",")[1] in ("entailment", "not_entailment")
    expected = predictor.predict([("A man sleeps.", "Someone rests."), ("It rains.", "The street is wet.")])
    assert exit_layers_in(tmp_path / "predictions.csv") == expected.exit_layer.tolist()
    assert speedup == 3 * 2 / expected.exit_layer.sum().item()

    (tmp_path / "bad.txt").write_bytes(b"fine\tok\ncaf\xe9\tok\n")
    for overrides, message in [
        ([f"predict.input={tmp_path / 'bad.txt'}", "exit.threshold=0.5"], "bad.txt:2: not valid UTF-8"),
        ([f"predict.input={inputs}", "exit.threshold=0.5", "task=mrpc"], "trained with task=rte, not task=mrpc"),
        (["predict.split=validation"], "exactly one of exit.threshold and exit.target_speedup"),
        (["predict.split=validation", "exit.target_speedup=1.7"], "no threshold reaching 1.7×"),
        (["predict.split=validation", "exit.rule=edr", "exit.threshold=0.5"], "does not apply to this model"),
    ]:
        with pytest.raises(Exception) as info:
            predict(config(*base, *overrides))
        assert message in str(find_user_error(info.value))
