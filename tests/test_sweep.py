"""The threshold sweep: grids, summaries, files, and a point recomputed by hand from the cache."""

import csv
import json
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from omegaconf import open_dict

from de3.callbacks.exit_sweep import ExitSweep
from de3.data.tasks import GLUE_TASKS
from de3.exit_cache import ExitCache, load_exit_caches
from de3.flops import FlopsModel, LayerCost, layer_speedup
from de3.jobs import sweep, train
from de3.models.exit_rules import decide, get_rule, rule_indicator
from de3.sweep import (
    add_deployed_readings,
    frontier_area,
    frontier_score,
    full_depth_scores,
    pareto_mask,
    reaching,
    summarize,
    summary_markdown,
    sweep_split,
    sweep_splits,
)
from de3.thresholds import RunThresholds, thresholds_document

FLOPS = FlopsModel(layers=(LayerCost(per_token=4 * 8 * 8 + 2 * 8 * 16, per_pair=16),) * 4, exit_head=100, prototype=10)
ALL_RULES = {
    "entropy": {},
    "maxprob": {},
    "patience": {},
    "pcee": {"patience": 2},
    "dr": {},
    "edr": {"lam": 1.0},
    "dge": {"divergence": "kl", "window": 1},
}


def random_cache(n=200, layers=4, classes=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=generator)
    # later layers are more confident and more often right
    signal = torch.nn.functional.one_hot(labels, classes).float()
    logits = torch.stack([(m + 1) * signal + 2 * torch.randn(n, classes, generator=generator) for m in range(layers)])
    distances = torch.rand(layers - 1, n, classes, generator=generator)
    return ExitCache(
        logits=logits, labels=labels, lengths=torch.randint(5, 30, (n,), generator=generator), distances=distances
    )


def test_grid_spans_one_to_l_times():
    rows = sweep_split("validation", random_cache(), GLUE_TASKS["rte"], ALL_RULES, FLOPS, num_thresholds=50)
    for rule in ("entropy", "maxprob", "dr", "edr"):
        speedups = [r["speedup"] for r in rows if r["rule"] == rule]
        assert min(speedups) == 1.0 and max(speedups) == 4.0, rule
        assert len(speedups) >= 50
    assert {r["rule"] for r in rows} == set(ALL_RULES)
    assert max(r["speedup"] for r in rows if r["rule"] == "dge") == 2.0  # layer 1 can never exit
    assert sorted(r["threshold"] for r in rows if r["rule"] == "patience") == [1.0, 2.0, 3.0]


def test_regression_sweeps_patience_only_and_extra_thresholds():
    cache = random_cache()
    cache.logits, cache.distances = cache.logits[..., :1], None
    cache.labels = cache.labels.float()
    rows = sweep_split("validation", cache, GLUE_TASKS["stsb"], ALL_RULES, FLOPS, extra_thresholds={"patience": [2.5]})
    assert {r["rule"] for r in rows} == {"patience"}
    assert "spearman" in rows[0] and 2.5 in [r["threshold"] for r in rows]


def test_flops_and_layer_speedup():
    layers, lengths = torch.tensor([1, 4]), torch.tensor([10, 10])
    assert layer_speedup(layers, 4) == pytest.approx(8 / 5)
    per_layer = FLOPS.layer_flops(torch.tensor([10]))[0, 0].item()
    full = 2 * (4 * per_layer + 100)
    early = (1 * per_layer + 100 + 10) + (4 * per_layer + 400 + 30)
    assert FLOPS.speedup(layers, lengths, uses_prototypes=True) == pytest.approx(full / early)


def test_pareto_reaching_and_area():
    assert pareto_mask([1, 2, 3, 2], [0.9, 0.8, 0.5, 0.7]) == [True, True, True, False]
    rows = [
        {"speedup": s, "threshold": t, "acc": a}
        for s, t, a in [(1.0, 0.1, 0.9), (1.6, 0.3, 0.8), (2.0, 0.4, 0.5), (2.2, 0.5, 0.6)]
    ]
    assert reaching(rows, 1.5)["threshold"] == 0.3 and reaching(rows, 3.0) is None
    points = [(r["speedup"], r["acc"]) for r in rows]  # (2.0, 0.5) is dominated by (2.2, 0.6)
    assert frontier_score(points, 1.5) == (pytest.approx(0.9 - 0.1 * 0.5 / 0.6), True)
    assert frontier_score(points, 1.6) == (0.8, False)
    assert frontier_score(points, 2.0) == (pytest.approx(0.8 - 0.2 * 0.4 / 0.6), True)
    assert frontier_score(points, 3.0) == (None, False)
    # trapezoids between the Pareto points: [1, 1.6] and [1.6, 2.2]
    assert frontier_area(points, 2.2) == pytest.approx((0.6 * 0.85 + 0.6 * 0.7) / 1.2)
    summary = summarize([{**r, "split": "validation", "rule": "entropy", "params": "{}"} for r in rows], "acc", [1.5])
    at = summary["validation"]["rules"]["entropy"]["targets"]["1.5"]
    assert (at["acc"], at["speedup"], at["interpolated"]) == (0.8, 1.6, True)
    assert at["frontier"] == pytest.approx(0.9 - 0.1 * 0.5 / 0.6)


def test_among_thresholds_of_equal_speedup_the_largest_is_the_one_recorded(tmp_path):
    """Three thresholds reach 1.6×: 0.35 is recorded, by `reaching`, by the summary and by a
    target the sweep did not fix (read from thresholds.json's curve)."""
    rows = [
        {"split": "validation", "rule": "entropy", "params": "{}", "threshold": t, "speedup": s, "acc": 0.5}
        for t, s in [(0.1, 1.0), (0.3, 1.6), (0.35, 1.6), (0.32, 1.6), (0.4, 2.0)]
    ]
    assert reaching(rows, 1.5)["threshold"] == 0.35
    summary = summarize(rows, "acc", [1.5])
    assert summary["validation"]["rules"]["entropy"]["targets"]["1.5"]["threshold"] == 0.35
    deploy = thresholds_document(summary["validation"]["rules"], rows, "validation", None, tmp_path, 128)
    (tmp_path / "thresholds.json").write_text(json.dumps(deploy))
    assert RunThresholds.read(tmp_path / "thresholds.json").point("entropy", 1.2)["threshold"] == 0.35


def test_full_depth_is_the_last_exits_own_score():
    """Exit L is always right, exit L−1 always wrong: the reference every early-exit score is
    compared against is the last exit's."""
    labels = torch.tensor([0, 1, 1, 0])
    right = torch.nn.functional.one_hot(labels, 2).float()
    cache = ExitCache(logits=torch.stack([right, 1 - right, right]), labels=labels, lengths=torch.full((4,), 5))
    assert full_depth_scores(GLUE_TASKS["rte"], cache) == {"accuracy": 1.0}
    summary = summarize(sweep_split("validation", cache, GLUE_TASKS["rte"], {"entropy": {}}, None), "accuracy", [1.5])
    full_depth = {"validation": full_depth_scores(GLUE_TASKS["rte"], cache)}
    assert "(full depth: 100.00)" in summary_markdown(summary, "accuracy", full_depth, [1.5])


def test_a_coarse_grid_is_read_where_its_frontier_passes_the_target():
    """PABEE-like: two points, the second far past 2×. The deployable point is at 2.6×, the
    frontier reading at 2× lies on the line between the two points."""
    points = [(1.0, 0.9), (2.6, 0.7)]
    assert frontier_score(points, 2.0) == (pytest.approx(0.9 - 0.2 * 1.0 / 1.6), True)
    assert frontier_score(points, 1.0) == (0.9, False)


def test_sweep_files_and_a_point_recomputed_by_hand(tiny_config, tmp_path):
    train(tiny_config("task=rte", "loss=de3", "backbone.config_overrides.num_hidden_layers=4"))
    for name in ("sweep.csv", "sweep.png", "summary.md", "thresholds.json", "exit_cache.pt"):
        assert (tmp_path / name).stat().st_size > 0, name
    cache = load_exit_caches(tmp_path / "exit_cache.pt")["validation"]
    n = 10  # the fixture's dev split
    assert cache.logits.shape[:2] == (4, n) and cache.distances.shape[:2] == (3, n)
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert {r["rule"] for r in rows} == {"entropy", "maxprob", "patience", "pcee", "dr", "edr", "dge"}
    row = [r for r in rows if r["rule"] == "edr"][len([r for r in rows if r["rule"] == "edr"]) // 2]
    threshold, lam = float(row["threshold"]), json.loads(row["params"])["lam"]

    exit_layers, correct = [], 0
    for i in range(cache.logits.shape[1]):
        layer = 4
        for m in range(3):
            p = torch.softmax(cache.logits[m, i], -1)
            entropy = float(-(p * p.log()).sum() / torch.log(torch.tensor(2.0)))
            c = int(p.argmax())
            r1, r2 = float(cache.distances[m, i, c]), float(cache.distances[m, i, 1 - c])
            dr = 0.5 * (1 + (r1 - r2) / max(r1, r2))
            value = 0.0 if dr == 0 or entropy == 0 else (lam + 1) / (lam / dr + 1 / entropy)
            if value < threshold:
                layer = m + 1
                break
        exit_layers.append(layer)
        correct += int(cache.logits[layer - 1, i].argmax() == cache.labels[i])
    assert float(row["speedup"]) == pytest.approx(4 * n / sum(exit_layers))
    assert float(row["accuracy"]) == pytest.approx(correct / n)
    deploy = json.loads((tmp_path / "thresholds.json").read_text())
    assert set(deploy["rules"]) == {r["rule"] for r in rows} and deploy["split"] == "validation"


def test_mode_sweep_on_a_checkpoint_without_wandb(tiny_config, tmp_path):
    train(tiny_config("task=mrpc"))
    checkpoint = json.loads((tmp_path / "results.json").read_text())["checkpoint"]
    (tmp_path / "sweep.csv").unlink()
    cfg = tiny_config("mode=sweep", f"ckpt_path={checkpoint}", "~logger", "task=sst2")  # task comes from the checkpoint
    with open_dict(cfg):
        cfg.callbacks.model_checkpoint = None
    score = sweep(cfg)
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert {"f1", "accuracy"} <= set(rows[0]) and 0.0 <= score <= 1.0
    assert json.loads((tmp_path / "results.json").read_text())["task"] == "mrpc"


def test_thresholds_chosen_on_the_first_split_are_scored_on_the_others(tmp_path):
    """The calibrated reading: each other split swept at the first split's thresholds too, and
    the deployed point there recomputed by hand; W&B gets every split's readings."""
    task, rules = GLUE_TASKS["rte"], {"entropy": {}, "edr": {"lam": 1.0}}
    caches = {"calibration": random_cache(seed=1), "validation": random_cache(n=150, seed=2)}
    rows = sweep_splits(caches, task, rules, FLOPS, num_thresholds=20)
    for rule in rules:
        chosen = {r["threshold"] for r in rows if r["split"] == "calibration" and r["rule"] == rule}
        assert chosen <= {r["threshold"] for r in rows if r["split"] == "validation" and r["rule"] == rule}
    summary = summarize(rows, "accuracy", (1.5, 2.0))
    add_deployed_readings(summary, rows, "accuracy")
    assert "deployed" not in summary["calibration"]["rules"]["edr"]
    for rule, params in rules.items():
        for target in ("1.5", "2.0"):
            threshold = summary["calibration"]["rules"][rule]["targets"][target]["threshold"]
            cache = caches["validation"]
            indicator = rule_indicator(get_rule(rule), cache.logits, cache.distances, params)
            layers, answers = decide(get_rule(rule), cache.logits, indicator, threshold, False)
            deployed = summary["validation"]["rules"][rule]["deployed"][target]
            assert deployed["threshold"] == threshold
            assert deployed["speedup"] == layer_speedup(layers, 4)
            assert deployed["accuracy"] == pytest.approx(float((answers == cache.labels).double().mean()))
    full_depth = {split: {"accuracy": 0.5} for split in caches}
    assert "### validation at the thresholds chosen on calibration" in summary_markdown(
        summary, "accuracy", full_depth, (1.5, 2.0)
    )
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="test")
    ExitSweep(str(tmp_path), rules)._log_wandb(SimpleNamespace(loggers=[logger]), rows, summary, "accuracy")
    logged = dict(logger.experiment.summary)
    deployed = summary["validation"]["rules"]["edr"]["deployed"]["2.0"]
    assert logged["sweep/validation/edr/deployed_accuracy@2.0x"] == deployed["accuracy"]
    assert logged["sweep/validation/edr/deployed_speedup@2.0x"] == deployed["speedup"]
    assert (
        logged["sweep/calibration/edr/accuracy@2.0x"]
        == summary["calibration"]["rules"]["edr"]["targets"]["2.0"]["accuracy"]
    )
    logger.experiment.finish()
