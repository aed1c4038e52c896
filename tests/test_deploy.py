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
from de3.models.exit_rules import RULES, decide, get_rule, rule_indicator
from de3.predictor import EarlyExitPredictor
from de3.thresholds import INDICATOR_RANGES, threshold_out_of_range
from tests.conftest import compose_config, tiny_overrides

# Parameters other than the config's defaults (dge window 1, pcee patience 2), an input length
# other than the default 128 (the fake RTE pairs have 47 to 58 tokens) and 8 of the 10
# validation rows: a predictor or a sweep that fell back to the defaults would not reproduce it.
SWEPT = ["exit.params.dge.window=2", "exit.params.pcee.patience=1", "data.max_seq_length=32", "data.eval_limit=8"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, glue_dir):
    """A trained and swept 3-layer tiny model on fake RTE (8 of its 10 validation examples)."""
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
    assert deploy["split"] == "validation" and deploy["max_seq_length"] == 32
    assert (deploy["eval_limit"], deploy["data_seed"]) == (8, 42)
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
    assert build_predictor(config(*base)).max_seq_length == 32


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
        32,
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
    assert (again["max_seq_length"], again["eval_limit"], again["data_seed"]) == (32, 8, 42)  # not the defaults
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
        (["predict.split=validation", "exit.target_speedup=3.5"], "rule 'entropy' reaches at most 3×"),
        (["predict.split=validation", "exit.rule=edr", "exit.threshold=0.5"], "does not apply to this model"),
    ]:
        with pytest.raises(Exception) as info:
            predict(config(*base, *overrides))
        assert message in str(find_user_error(info.value))


def test_a_run_stopped_before_its_first_validation_deploys_the_checkpoint_it_swept(config, tmp_path):
    """`trainer.max_steps=2` of 6 steps per epoch: no validation, so no best checkpoint; the
    sweep runs on last.ckpt, and thresholds.json names it."""
    train(config("task=rte", "trainer.max_steps=2", "data.batch_size=4"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]
    assert recorded(tmp_path)["checkpoint"] == {
        "path": "checkpoints/last.ckpt",
        "sha256": hashlib.sha256(last.read_bytes()).hexdigest(),
    }
    assert json.loads((tmp_path / "results.json").read_text())["checkpoint"] == str(last)
    (target, point), *_ = reached(tmp_path, "entropy")
    overrides = ["mode=predict", f"run_dir={tmp_path}", "exit.rule=entropy", f"exit.target_speedup={target}"]
    assert predict(config(*overrides, "predict.split=validation")) == point["speedup"]


def sweep_rows(run_dir, rule):
    """(threshold, speed-up) of every point `rule` reached in the sweep of the recorded split."""
    with (run_dir / "sweep.csv").open(newline="") as handle:
        return [
            (float(row["threshold"]), float(row["speedup"]))
            for row in csv.DictReader(handle)
            if row["split"] == "validation" and row["rule"] == rule
        ]


@pytest.mark.parametrize("target", ["1.25", "1.7", "2.4"])
def test_any_target_the_sweep_covers_is_the_slowest_threshold_reaching_it(target, run_dir, config, tmp_path, caplog):
    swept = sweep_rows(run_dir, "entropy")
    slowest = min(s for _, s in swept if s >= float(target))
    base = ["mode=predict", f"run_dir={run_dir}", "exit.rule=entropy", f"exit.target_speedup={target}"]
    with caplog.at_level(logging.INFO):
        speedup = predict(config(*base, "predict.split=validation"))
    threshold = build_predictor(config(*base)).threshold
    assert speedup == slowest and (threshold, slowest) in swept
    assert f"exit.target_speedup={target}: rule entropy, threshold {threshold:.6g}, which reached {slowest:.4f}×" in (
        caplog.text
    )


def test_a_whole_number_target_from_the_command_line_is_the_recorded_one(run_dir, config, tmp_path):
    """`exit.target_speedup=2` arrives as an int: it is the target the sweep recorded as "2.0",
    from the curve or, in a thresholds.json written before curves, from its targets."""
    point = recorded(run_dir)["rules"]["entropy"]["thresholds"]["2.0"]
    base = ["mode=predict", "exit.rule=entropy", "exit.target_speedup=2"]
    assert build_predictor(config(*base, f"run_dir={run_dir}")).threshold == point["threshold"]
    without_curves = recorded(run_dir)
    for entry in without_curves["rules"].values():
        del entry["curve"]
    without_curves["checkpoint"]["path"] = str(run_dir / without_curves["checkpoint"]["path"])
    (tmp_path / "thresholds.json").write_text(json.dumps(without_curves))
    cfg = config(*base, f"run_dir={tmp_path}")
    assert isinstance(cfg.exit.target_speedup, int)
    assert build_predictor(cfg).threshold == point["threshold"]
    with pytest.raises(De3Error, match=r"no threshold reaching 1.7×; targets reached: \['1.5', '2.0'"):
        build_predictor(config("mode=predict", "exit.rule=entropy", "exit.target_speedup=1.7", f"run_dir={tmp_path}"))


ENTRY = {"params": {}, "thresholds": {"1.5": {"threshold": 0.3, "speedup": 1.6}}, "curve": [[0.3, 1.6]]}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"entropy": {"thresholds": ENTRY["thresholds"]}}, "rules.entropy.params: Field required"),
        ({"entropy": {**ENTRY, "params": []}}, "rules.entropy.params: Input should be an object"),
        ({"entropy": {**ENTRY, "thresholds": {"1.5": 0.3}}}, "rules.entropy.thresholds.1.5: Input should be"),
        ({"entropy": {**ENTRY, "thresholds": {"1.5": {"threshold": 0.3}}}}, "thresholds.1.5.speedup: Field required"),
        ({"entropy": {**ENTRY, "curve": [[0.3]]}}, "rules.entropy.curve.0"),
        ({"entropy": {**ENTRY, "curve": [[0.3, 0.5]]}}, "greater than or equal to 1"),
        ([ENTRY], "rules: Input should be an object"),
        ({"fastest": ENTRY}, "rules.fastest: unknown exit rule 'fastest'"),
        ({"edr": {**ENTRY, "params": {"lam": -1}}}, "rules.edr: exit.params.edr.lam=-1: Input should be greater"),
        (
            {"entropy": {**ENTRY, "thresholds": {"1.5": {"threshold": -0.5, "speedup": 1.6}}}},
            "rules.entropy.thresholds.1.5: threshold -0.5: rule entropy's indicator lies in [0, 1]",
        ),
        ({"edr": {**ENTRY, "params": {"lam": 1.0}, "curve": [[-0.1, 1.0]]}}, "rules.edr.curve[0]: threshold -0.1"),
        ({"dge": {**ENTRY, "params": {"divergence": "js", "window": 1}, "curve": [[-1.0, 1.0]]}}, "lies in [0, inf]"),
        ({"patience": {**ENTRY, "params": {"delta": 0.1}, "curve": [[0.0, 1.0]]}}, "a threshold is a count ≥ 1"),
        ({"entropy": {**ENTRY, "thresholds": {"fast": None}}}, "rules.entropy.thresholds: 'fast' is not a target"),
    ],
)
def test_a_malformed_thresholds_json_is_refused_in_one_line_naming_the_entry(rules, message, tmp_path):
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"checkpoint": None, "split": "validation", "max_seq_length": 64, "rules": rules}))
    with pytest.raises(De3Error) as info:
        EarlyExitPredictor.from_run(tmp_path, "entropy", target_speedup=1.5)
    assert str(info.value).startswith(f"{path} is not a de3 thresholds.json: ") and "\n" not in str(info.value)
    assert message in str(info.value)


def test_a_threshold_below_the_indicators_range_is_refused_from_the_command_line(run_dir, config):
    with pytest.raises(De3Error, match=r"exit.threshold=-0.5: rule entropy's indicator lies in \[0, 1\]"):
        build_predictor(config("mode=predict", f"run_dir={run_dir}", "exit.rule=entropy", "exit.threshold=-0.5"))


def test_every_rule_has_its_indicators_range():
    assert set(INDICATOR_RANGES) == set(RULES)


def test_thresholds_a_sweep_takes_from_indicators_below_zero_by_rounding_are_accepted():
    """JS divergence of two equal distributions computes to about −3e-8 here, and the sweep's
    thresholds are quantiles of the indicator's values: a real run's curve holds one."""
    p = torch.softmax(torch.tensor([[2.0, -1.0, 0.5]]), -1).log()
    dge = rule_indicator(get_rule("dge"), torch.stack([p, p + 1e-7, p]), None, {"divergence": "js"})
    assert dge[1].abs().item() < 1e-6
    for rule, threshold in [("dge", -2.995693648699671e-08), ("maxprob", -5.96e-08), ("entropy", 0.0)]:
        assert threshold_out_of_range(get_rule(rule), threshold) is None
    assert "no sample ever exits" in threshold_out_of_range(get_rule("dge"), -0.5)
