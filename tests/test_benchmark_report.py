"""The GLUE trade-off driver and report, on real (tiny) runs laid out as the driver lays them out."""

import json
import shutil

from benchmarks.glue_tradeoff import run as driver
from benchmarks.glue_tradeoff.report import TARGETS, load_runs, load_sensitivity, report
from de3.jobs import train
from tests.conftest import compose_config


def test_report_tables_from_run_folders(tiny_config, tmp_path):
    out = tmp_path / "out"
    for method in ("de3", "pabee"):
        folder = out / "rte" / method / "seed42"
        cfg = tiny_config(f"experiment={method}", "task=rte", "backbone.config_overrides.num_hidden_layers=3")
        train(compose_config(list(cfg.hydra.overrides.task), folder))
    variant = out / "sensitivity" / "rte" / "loss.alpha=0.3" / "seed42"
    shutil.copytree(out / "rte" / "de3" / "seed42", variant)

    runs = load_runs(out)
    assert sorted((r.task, r.method, r.seed, r.rule) for r in runs) == [
        ("rte", "de3", 42, "edr"),
        ("rte", "pabee", 42, "patience"),
    ]
    text = report(runs, load_sensitivity(out), "the command", tmp_path)
    de3_row = next(line for line in text.splitlines() if line.startswith("| de3 | edr |"))
    full_depth = f"{100 * runs[0].full_depth:.1f} (1)"
    assert de3_row.split(" | ")[2] == full_depth  # the final exit's score, one seed
    assert "| pcee | — |" in text  # no run yet: a dash, not a number
    for target in TARGETS:  # de3 − pabee on seed 42, or "not reached" where either rule never got that fast
        paired = text.split("seed by seed")[1].split(f"### {target}×")[1].split("###")[0]
        de3_score, pabee_score = runs[0].score_at(target), runs[1].score_at(target)
        gap = None if None in (de3_score, pabee_score) else 100 * (de3_score - pabee_score)
        assert (
            f"| pabee | {gap:+.1f} ({int(gap > 0)}/1) |" if gap is not None else "| pabee | not reached |"
        ) in paired
    assert "## Rule effect" in text and "| edr |" in text
    assert "### rte" in text.split("EDR's λ")[1]  # λ re-simulated from the exit cache
    assert "| loss.alpha=0.3 |" in text
    assert (tmp_path / "curves_rte.png").is_file()


def test_driver_sweeps_a_shared_training_instead_of_retraining(glue_dir, tmp_path, monkeypatch):
    budget = ("backbone=tiny_bert", "backbone.config_overrides.num_hidden_layers=3", "debug=fast")
    monkeypatch.setattr(driver, "BUDGET", (*budget, f"data.data_dir={glue_dir}", "data.batch_size=8", "logger=csv"))
    out = tmp_path / "loss.alpha=0.3"  # '=' in a path must not break the Hydra overrides
    pabee, pcee = (out / "rte" / method / "seed42" for method in ("pabee", "pcee"))
    driver.run_all([driver.Job(pabee, "rte", "pabee", 42), driver.Job(pcee, "rte", "pcee", 42, trained_in=pabee)])

    trained, swept = (json.loads((d / "results.json").read_text()) for d in (pabee, pcee))
    assert "mode=sweep" in (pcee / "job.log").read_text().splitlines()[0]
    assert swept["checkpoint"] == trained["checkpoint"]
    assert swept["scores"] == trained["scores"]  # the same weights, evaluated again
    assert swept["config"]["exit"]["rule"] == "pcee" and trained["config"]["exit"]["rule"] == "patience"
    assert "pcee" in (pcee / "sweep.csv").read_text()
    assert not (pabee / "checkpoints").exists()  # deleted once the sweep no longer needs it
