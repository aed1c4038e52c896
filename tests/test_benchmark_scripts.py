"""The timing benchmarks' code paths, on a tiny random encoder and the fake GLUE files: a change in
the library (a new key in the batches, a renamed argument) must break here, not in the next
benchmark session."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import exit_step_cost
from benchmarks.early_exit_latency import RULES_TIMED, sst2_timing_model, time_weighted_ratio
from benchmarks.exit_step_cost import (
    STEPS,
    OperationCounter,
    layer_cost_by_batch_size,
    never_exiting_predictors,
    operations_per_layer,
    sst2_one_at_a_time,
    step_costs,
    table,
)
from benchmarks.glue_tradeoff import run as driver
from de3.flops import layer_speedup
from de3.models.backbone import load_encoder, load_tokenizer
from de3.sweep import frontier_area


def tiny_encoder():
    """(tokenizer, 3-layer random BERT): DGE has no value at the first exit, so with 2 layers it
    would have one exit and no threshold to time."""
    tokenizer = load_tokenizer("tiny", model_type="bert")
    sizes = {"num_hidden_layers": 3, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    return tokenizer, load_encoder(
        "tiny", model_type="bert", random_init=True, tokenizer=tokenizer, config_overrides=sizes
    )


def test_gpu_script_trains_sweeps_in_each_precision_and_times_every_rule_against_hugging_face(glue_dir, tmp_path):
    """benchmarks/gpu_early_exit.sh end to end on the CPU with a tiny 3-layer model: what the device
    machine runs, so that a device session spends its minutes measuring, not debugging."""
    train = f"backbone=tiny_bert backbone.config_overrides.num_hidden_layers=3 debug=fast data.data_dir={glue_dir}"
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "SWEEP": "trainer=cpu callbacks.progress_bar=null",
        "TRAIN": f"{train} task.calibration_fraction=null callbacks.progress_bar=null",
        "SAMPLES": "8",
        "ROUNDS": "2",
        "OUT": str(tmp_path),
        "DE3_GLUE_DIR": str(glue_dir),
        "WANDB_SILENT": "true",
    }
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_early_exit.sh"
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for precision in ("fp32", "bf16"):
        result = json.loads((tmp_path / f"gpu-{precision}.json").read_text())
        assert result["precision"] == precision and result["device"] == "cpu" and result["samples"] == 8
        recorded = json.loads((tmp_path / f"thresholds-{precision}.json").read_text())
        assert recorded["precision"] == precision
        for batch_size in ("1", "32"):
            rows = result["batch_sizes"][batch_size]
            expected = {"hf"} | {
                name
                for rule, entry in recorded["rules"].items()
                if rule in RULES_TIMED
                for name in [f"{rule} full depth"]
                + [f"{rule} {float(t):g}×" for t, p in entry["thresholds"].items() if p]
            }
            assert set(rows) == expected and len(expected) > 5
            for name, row in rows.items():
                assert len(row["seconds"]) == 2 and all(s > 0 for s in row["seconds"])
                assert row["layer_ratio"] == 1.0 if name == "hf" or "full depth" in name else row["layer_ratio"] >= 1.0
                full = name == "hf" or "full depth" in name
                assert row["time_weighted_ratio"] == 1.0 if full else row["time_weighted_ratio"] >= 1.0
            assert len(rows["hf"]["batch_seconds"]) == rows["hf"]["batches"]
        table = (tmp_path / f"gpu-{precision}.md").read_text()
        assert table.count("\n| 1 |") == len(result["batch_sizes"]["1"])


def test_the_time_weighted_ratio_weighs_each_batch_by_what_hugging_face_spends_on_it():
    # a long input (3 s at full depth) that runs all 4 layers, a short one (1 s) that leaves after 1
    layers = [torch.tensor([4]), torch.tensor([1])]
    assert layer_speedup(torch.cat(layers), 4) == pytest.approx(8 / 5)
    assert time_weighted_ratio([3.0, 1.0], layers, 4) == pytest.approx(4.0 / (3.0 + 0.25))
    # a batch counts the share of its rows' layers run
    assert time_weighted_ratio([2.0], [torch.tensor([4, 2])], 4) == pytest.approx(2.0 / (2.0 * 6 / 8))


def test_step_costs_split_each_rules_pass_into_its_steps_and_put_the_functions_back(glue_dir):
    tokenizer, encoder = tiny_encoder()
    model = sst2_timing_model(encoder)
    batches = sst2_one_at_a_time(model, tokenizer, str(glue_dir), samples=6)
    costs = step_costs(model, tokenizer, batches, list(RULES_TIMED), repeats=1)
    for rule, cost in costs.items():
        assert cost["backbone layers"] > 0 and cost["exit heads"] > 0 and cost["rule indicator"] > 0
        uses_prototypes = rule == "edr"
        assert (cost["prototype mapping"] > 0) == uses_prototypes and (
            cost["prototype distances"] > 0
        ) == uses_prototypes
        assert sum(cost[step] for step in STEPS) + cost["the rest"] == pytest.approx(cost["total"])
    assert len(table(costs)) == 2 + len(RULES_TIMED)
    # the clocks are gone: the model calls its own methods again
    assert "layer" not in vars(model.backbone) and "map_layer" not in vars(model.prototypes)


def test_layer_cost_by_batch_size_runs_every_layer_on_n_copies(glue_dir, monkeypatch):
    tokenizer, encoder = tiny_encoder()
    model = sst2_timing_model(encoder)
    sample = sst2_one_at_a_time(model, tokenizer, str(glue_dir), samples=2)[1]
    sizes_seen = []
    monkeypatch.setattr(model.backbone, "layer", lambda m, hidden, inputs: sizes_seen.append(hidden.shape[0]))

    def clock(run):  # a step of n samples "takes" 100 + 20·n µs
        sizes_seen.clear()
        run()
        assert len(sizes_seen) == model.num_layers and len(set(sizes_seen)) == 1
        return 1e-6 * (100 + 20 * sizes_seen[0]) * model.num_layers

    monkeypatch.setattr(exit_step_cost, "seconds_of", clock)
    assert layer_cost_by_batch_size(model, sample, [1, 2, 8], repeats=3) == pytest.approx({1: 120, 2: 140, 8: 260})
    monkeypatch.undo()
    assert layer_cost_by_batch_size(model, sample, [1, 4], repeats=1).keys() == {1, 4}  # really timed


def test_operations_per_layer_counts_what_computes_in_a_layer_and_in_each_rules_step(glue_dir):
    tokenizer, encoder = tiny_encoder()
    model = sst2_timing_model(encoder)
    batch = sst2_one_at_a_time(model, tokenizer, str(glue_dir), samples=2)[0]
    with OperationCounter() as views_only:
        torch.ones(2, 3).view(3, 2).t().unsqueeze(0)  # one operation (ones), three views
    assert views_only.count == 1
    predictors = never_exiting_predictors(model, tokenizer, ["entropy", "edr"])
    counts = {rule: operations_per_layer(predictor, batch) for rule, predictor in predictors.items()}
    assert counts["entropy"][0] == counts["edr"][0] > 0  # the same backbone layer
    # EDR's step is the entropy's and more: the prototype mapping and distances, the distance ratio
    assert 0 < counts["entropy"][1] < counts["edr"][1]


TINY_BUDGET = ("backbone=tiny_bert", "backbone.config_overrides.num_hidden_layers=3", "debug=fast", "logger=csv")
TINY_BUDGET += ("task.calibration_fraction=0.1", "task.calibration_min_examples=4", "data.batch_size=8")


def test_de3_tuning_tries_its_recipes_picks_by_calibration_area_and_plans_de3_tuned(
    glue_dir, tmp_path, monkeypatch, capsys
):
    """The DE³ tuning plan on a tiny encoder: its three recipes (the protocol's de3 is its own
    tuning run), the pick written to tuned.json beside the learning rates, and `de3-tuned`
    planned with it on every task. One recipe trains for real (two-stage, which trains its own
    stage 1 when DeeBERT's checkpoint is gone); the other two are given its outputs."""
    monkeypatch.setattr(driver, "budget", lambda task: (*TINY_BUDGET, f"data.data_dir={glue_dir}"))
    monkeypatch.setattr(driver, "TUNED", tmp_path / "tuned.json")
    picked = {"de3": driver.CONFIGS[2], "deebert": driver.CONFIGS[1], "fastbert": driver.CONFIGS[1]}
    driver.TUNED.write_text(json.dumps({"task": "sst2", "criterion": "area", "tried": {}, "picked": picked}))
    out, kept = tmp_path / "out", tmp_path / "kept"
    jobs = driver.de3_tuning_jobs(out, picked)
    assert [(j.method, j.experiment, j.extra) for j in jobs] == [
        ("de3", "de3", (picked["de3"],)),
        ("de3-tuned", "de3_two_stage", (picked["deebert"],)),
        ("de3-tuned", "de3_detached", (picked["de3"], f"loss.alpha={driver.DETACHED_ALPHA}")),
    ]
    assert jobs[0].directory == driver.tuning_run_dir(out / "tuning", "de3", picked["de3"])  # --tune's own run
    assert jobs[1].stage_one_in == driver.tuning_run_dir(out / "tuning", "deebert", picked["deebert"])
    driver.run_all([jobs[1]], out, kept)
    command = (jobs[1].directory / "job.log").read_text().splitlines()[0]
    assert f"experiment=de3_two_stage task=sst2 seed=42 {' '.join(TINY_BUDGET)}" in command
    assert f"trainer.max_epochs={2 * driver.EPOCHS} {picked['deebert']}" in command  # its own stage 1
    two_stage = driver.kept_folder(jobs[1], out, kept)
    assert (two_stage / driver.LAMBDA_FILE).is_file()  # EDR's λ, as for de3
    for job in (jobs[0], jobs[2]):
        shutil.copytree(two_stage, driver.kept_folder(job, out, kept))

    monkeypatch.setattr(sys, "argv", ["run", "--tune-de3", "--out", str(out), "--kept", str(kept)])
    driver.main()  # every recipe finished: nothing runs again, the pick is written
    tuned = json.loads(driver.TUNED.read_text())
    assert tuned["picked"] == picked  # the learning rates stay as they were chosen
    recipes = tuned["recipes"]["de3-tuned"]
    assert list(recipes["tried"]) == list(driver.DE3_RECIPES)
    run = driver.calibration_points(two_stage)
    upto = max(s for s, _ in run)
    assert recipes["tried"] == dict.fromkeys(driver.DE3_RECIPES, frontier_area(run, upto))
    assert recipes["picked"] == "joint"  # a tie goes to the first
    assert recipes["configurations"]["detached"] == " ".join(jobs[2].overrides())
    assert f"1×–{upto:.2f}×" in recipes["criterion"]

    for name, recipe in driver.DE3_RECIPES.items():
        monkeypatch.setattr(driver, "tuned_recipe", lambda name=name: name)
        planned = driver.main_jobs(out, ["rte", "stsb"], ["deebert", "de3-tuned"], [42])
        tuned_jobs = [j for j in planned if j.method == "de3-tuned"]
        assert [j.task for j in tuned_jobs] == ["rte"]  # prototypes need classes: no STS-B run
        job = tuned_jobs[0]
        assert job.directory == driver.run_dir(out, "rte", "de3-tuned", 42) and job.experiment == recipe.experiment
        assert job.extra == (picked[recipe.lr_of], *recipe.overrides)
        staged = recipe.stage_one_of is not None
        assert job.epochs == (2 if staged else 1) * driver.EPOCHS
        assert job.stage_one_in == (driver.run_dir(out, "rte", "deebert", 42) if staged else None)
        if recipe.is_protocol_de3():  # its runs are the protocol's de3 runs: nothing to train
            monkeypatch.setattr(sys, "argv", ["run", "--methods", "de3-tuned", "--out", str(out), "--list"])
            driver.main()
            assert "nothing to train" in capsys.readouterr().out
    monkeypatch.setattr(driver, "tuned_recipe", lambda: "detached")
    listing = ["run", "--methods", "de3-tuned", "--tasks", "rte", "--out", str(out), "--kept", str(kept), "--list"]
    monkeypatch.setattr(sys, "argv", listing)
    driver.main()  # lists, runs nothing
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith("rte de3-tuned seed42 experiment=de3_detached") and "[to run]" in listed[0]
    assert listed[-1].startswith("0 of 3 finished; about") and not (out / "rte").exists()
