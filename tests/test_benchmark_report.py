"""The GLUE trade-off driver and report, on real (tiny) runs with a calibration split, laid out and
kept as the driver lays them out and keeps them."""

import json
import shutil

import pytest

from benchmarks.glue_tradeoff import run as driver
from benchmarks.glue_tradeoff.report import TARGETS, load_runs, load_sensitivity, report
from de3.exit_cache import load_exit_caches
from de3.flops import layer_speedup
from de3.jobs import train
from de3.models.exit_rules import decide, get_rule, rule_indicator
from tests.conftest import compose_config

CALIBRATED = ("task.calibration_fraction=0.1", "task.calibration_min_examples=4")  # 4 of fake RTE's 24 rows


def test_report_tables_from_kept_run_outputs(tiny_config, tmp_path):
    out, kept = tmp_path / "out", tmp_path / "kept"
    for method in ("de3", "pabee"):
        folder = out / "rte" / method / "seed42"
        cfg = tiny_config(
            f"experiment={method}", "task=rte", "backbone.config_overrides.num_hidden_layers=3", *CALIBRATED
        )
        train(compose_config(list(cfg.hydra.overrides.task), folder))
        driver.keep_outputs(driver.Job(folder, "rte", method, 42), out, kept)
    assert sorted(p.name for p in (kept / "rte" / "de3" / "seed42").iterdir()) == [
        "edr_lambda.csv",
        "results.json",
        "summary.md",
        "sweep.csv",
        "thresholds.json",
    ]
    shutil.copytree(kept / "rte" / "de3" / "seed42", kept / "sensitivity" / "rte" / "loss.alpha=0.3" / "seed42")

    runs = load_runs(kept)
    assert sorted((r.task, r.method, r.seed, r.rule, r.chosen_on) for r in runs) == [
        ("rte", "de3", 42, "edr", "calibration"),
        ("rte", "pabee", 42, "patience", "calibration"),
    ]
    de3_run = runs[0]
    text = report(runs, load_sensitivity(kept), "the command", tmp_path)
    de3_row = next(line for line in text.splitlines() if line.startswith("| de3 | edr |"))
    assert de3_row.split(" | ")[2] == f"{100 * de3_run.full_depth:.1f} (1)"  # the final exit's dev score
    assert "| pcee | — |" in text  # no run yet: a dash, not a number
    # calibrated, recomputed from dev's cached logits at the threshold thresholds.json deployed
    cache = load_exit_caches(out / "rte" / "de3" / "seed42" / "exit_cache.pt")["validation"]
    deployed = json.loads((kept / "rte" / "de3" / "seed42" / "thresholds.json").read_text())["rules"]["edr"]
    indicator = rule_indicator(get_rule("edr"), cache.logits, cache.distances, deployed["params"])
    for target in TARGETS:
        point = deployed["thresholds"][str(target)]
        if point is None:
            assert de3_run.calibrated_at(target) is None
            continue
        layers, answers = decide(get_rule("edr"), cache.logits, indicator, point["threshold"], False)
        expected = (float((answers == cache.labels).double().mean()), layer_speedup(layers, 3))
        assert de3_run.calibrated_at(target) == pytest.approx(expected)
        assert f"{100 * expected[0]:.1f} (1) @ {expected[1]:.2f}×" in de3_row
    for target in TARGETS:  # de3 − pabee on seed 42 (calibrated), or "not reached" where either never got that fast
        paired = text.split("seed by seed")[1].split(f"### {target}×")[1].split("###")[0]
        de3_score, pabee_score = ((r.calibrated_at(target) or (None,))[0] for r in runs)
        gap = None if None in (de3_score, pabee_score) else 100 * (de3_score - pabee_score)
        assert (
            f"| pabee | {gap:+.1f} ({int(gap > 0)}/1) |" if gap is not None else "| pabee | not reached |"
        ) in paired
    assert "## Rule effect" in text and "| edr |" in text
    assert "| 16 |" in text.split("EDR's λ")[1]  # λ re-simulated by the driver (edr_lambda.csv)
    assert "| loss.alpha=0.3 |" in text
    assert (tmp_path / "curves_rte.png").is_file()


def test_driver_sweeps_a_shared_training_instead_of_retraining(glue_dir, tmp_path, monkeypatch):
    budget = ("backbone=tiny_bert", "backbone.config_overrides.num_hidden_layers=3", "debug=fast", *CALIBRATED)
    budget += (f"data.data_dir={glue_dir}", "data.batch_size=8", "logger=csv")
    monkeypatch.setattr(driver, "budget", lambda task: budget)
    out = tmp_path / "loss.alpha=0.3"  # '=' in a path must not break the Hydra overrides
    pabee, pcee = (out / "rte" / method / "seed42" for method in ("pabee", "pcee"))
    jobs = [driver.Job(pabee, "rte", "pabee", 42), driver.Job(pcee, "rte", "pcee", 42, trained_in=pabee)]
    driver.run_all(jobs, out, tmp_path / "kept")

    trained, swept = (json.loads((d / "results.json").read_text()) for d in (pabee, pcee))
    assert "mode=sweep" in (pcee / "job.log").read_text().splitlines()[0]
    assert swept["checkpoint"] == trained["checkpoint"]
    assert swept["scores"] == trained["scores"]  # the same weights, evaluated again
    assert swept["config"]["exit"]["rule"] == "pcee" and trained["config"]["exit"]["rule"] == "patience"
    assert "pcee" in (pcee / "sweep.csv").read_text()
    assert not (pabee / "checkpoints").exists()  # deleted once the sweep no longer needs it
    kept = tmp_path / "kept" / "rte" / "pcee" / "seed42"
    assert sorted(p.name for p in kept.iterdir()) == ["results.json", "summary.md", "sweep.csv", "thresholds.json"]
    assert (kept / "sweep.csv").read_text() == (pcee / "sweep.csv").read_text()
