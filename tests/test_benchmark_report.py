"""The GLUE trade-off driver and report, on real (tiny) runs with a calibration split, laid out and
kept as the driver lays them out and keeps them."""

import dataclasses
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest

from benchmarks.glue_tradeoff import run as driver
from benchmarks.glue_tradeoff.cells import TARGETS, area_cell
from benchmarks.glue_tradeoff.findings import FINDINGS, findings_lines, numbers_not_in_tables, stale_findings
from benchmarks.glue_tradeoff.header import code_line
from benchmarks.glue_tradeoff.kept_runs import chosen_epoch, load_runs, load_sensitivity, load_tuning
from benchmarks.glue_tradeoff.paired import PAST_TARGETS, compute_matched_section, paired_gap, past_the_targets_section
from benchmarks.glue_tradeoff.readme import README_BEGIN, README_END, readme_with_tables
from benchmarks.glue_tradeoff.report import HERE, report
from benchmarks.glue_tradeoff.tuning import tuning_section
from de3.errors import De3Error
from de3.exit_cache import load_exit_caches
from de3.flops import layer_speedup
from de3.jobs import train
from de3.models.exit_rules import decide, get_rule, rule_indicator
from de3.sweep import frontier_area, frontier_score
from tests.conftest import compose_config

CALIBRATED = ("task.calibration_fraction=0.1", "task.calibration_min_examples=4")  # 4 of fake RTE's 24 rows


def test_report_tables_from_kept_run_outputs(tiny_config, glue_dir, tmp_path, monkeypatch):
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
    shutil.copytree(kept / "rte" / "de3" / "seed42", kept / "rte" / "de3-matched" / "seed42")
    monkeypatch.setattr("benchmarks.glue_tradeoff.paired.MATCHED_TASKS", ("rte",))
    # not tuned (the repository's is), and the tables alone
    monkeypatch.setattr("benchmarks.glue_tradeoff.tuning.TUNED", tmp_path / "tuned.json")
    monkeypatch.setattr("benchmarks.glue_tradeoff.findings.FINDINGS", tmp_path / "findings.md")

    runs = load_runs(kept)
    assert sorted((r.task, r.method, r.seed, r.rule, r.chosen_on) for r in runs) == [
        ("rte", "de3", 42, "edr", "calibration"),
        ("rte", "de3-matched", 42, "edr", "calibration"),
        ("rte", "pabee", 42, "patience", "calibration"),
    ]
    de3_run = next(r for r in runs if r.method == "de3")
    text = report(runs, load_sensitivity(kept), "the command", tmp_path, glue_dir)
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
        de3_score, pabee_score = ((r.calibrated_at(target) or (None,))[0] for r in (de3_run, runs[-1]))
        gap = None if None in (de3_score, pabee_score) else 100 * (de3_score - pabee_score)
        assert (
            f"| pabee | {gap:+.1f} ({int(gap > 0)}/1) |" if gap is not None else "| pabee | not reached |"
        ) in paired
    assert "## Rule effect" in text and "| edr |" in text
    assert "| 16 |" in text.split("EDR's λ")[1]  # λ re-simulated by the driver (edr_lambda.csv)
    assert "`de3-tuned` runs' exit caches" not in text  # no such run: no section
    # a de3-tuned run (here de3's outputs, every dev score of its λ file set to 0) gets its own λ table
    tuned_folder = kept / "rte" / "de3-tuned" / "seed42"
    shutil.copytree(kept / "rte" / "de3" / "seed42", tuned_folder)
    swept = pd.read_csv(tuned_folder / driver.LAMBDA_FILE)
    swept.loc[swept["split"] == "validation", "accuracy"] = 0.0
    swept.to_csv(tuned_folder / driver.LAMBDA_FILE, index=False, na_rep="nan")
    lambdas = report(load_runs(kept), {}, "the command", tmp_path, glue_dir).split("\n## EDR's λ, re-simulated from ")
    assert [part.split("\n")[0] for part in lambdas[1:]] == [
        "the `experiment=de3` runs' exit caches",
        "the `de3-tuned` runs' exit caches",
    ]
    rows = [line for line in lambdas[2].split("\n## ")[0].splitlines() if line.startswith("| ") and "λ" not in line]
    tuned_cells = [cell for line in rows for cell in line.strip("| ").split(" | ")[1:]]
    reached = [cell for cell in tuned_cells if cell != "not reached"]
    assert reached and all(cell.startswith("0.0 (1) @ ") for cell in reached)
    shutil.rmtree(tuned_folder)
    # the task's heading: the best constant answer, counted from fake RTE's dev labels here
    labels = [line.rsplit("\t", 1)[-1] for line in (glue_dir / "RTE" / "dev.tsv").read_text().splitlines()[1:]]
    majority = max(labels.count(name) for name in set(labels)) / len(labels)
    assert f"The best constant answer scores {100 * majority:.1f} on dev." in text
    mean_depth = (de3_run.full_depth + runs[-1].full_depth) / 2
    standard_error = 100 * (mean_depth * (1 - mean_depth) / len(labels)) ** 0.5
    assert f"Dev has {len(labels)} examples: one answer moves accuracy by {100 / len(labels):.2f} points" in text
    assert (
        f"an accuracy of {100 * mean_depth:.1f} (the methods' mean full depth) is {standard_error:.1f} points" in text
    )
    # area over the speed-ups both runs reach; oracle cells marked where interpolated
    upto = min(max(s for s, _ in r.points()) for r in runs)
    header = next(line for line in text.splitlines() if line.startswith("| method | rule | full depth |"))
    assert upto == 1.0  # the tiny pabee run's patience never exits early on dev: no common range
    assert header.endswith("| area (some run never exits early) |") and de3_row.endswith("| — |")
    slower = (1 + de3_run.fastest()) / 2  # a matched run is not in the task's table, nor in its area's range
    capped = [{**row, "speedup": min(row["speedup"], slower)} for row in de3_run.rows]
    matched_run = dataclasses.replace(de3_run, method="de3-matched", rows=capped)
    de3_only = report([de3_run, matched_run], {}, "the command", tmp_path, glue_dir)
    area_row = next(line for line in de3_only.splitlines() if line.startswith("| de3 | edr |"))
    assert f"| area 1–{de3_run.fastest():.2f}× (oracle) |" in de3_only
    assert area_row.split(" | ")[-1] == f"{100 * frontier_area(de3_run.points(), de3_run.fastest()):.1f} (1) |"
    oracle_cells = de3_row.split(" | ")[4:-1:2]
    for target, oracle in zip(TARGETS, oracle_cells):
        assert oracle.endswith("*") == frontier_score(de3_run.points(), target)[1]
    retention = text.split("## Retention")[1].split("### 2.0×")[1].split("###")[0]
    reading = de3_run.calibrated_at(2.0)
    expected_retention = "not reached" if reading is None else f"{100 * reading[0] / de3_run.full_depth:.1f}% (1)"
    assert f"| de3 | {expected_retention} |" in retention
    by_seed = text.split("## Full depth, seed by seed")[1].split("\n## ")[0]
    assert "| method | 42 |" in by_seed and f"| de3 | {100 * de3_run.full_depth:.1f} |" in by_seed
    per_exit = text.split("## Per-exit dev scores")[1].split("\n## ")[0]
    exits = json.loads((kept / "rte" / "de3" / "seed42" / "results.json").read_text())["scores"]["validation"]
    assert "| de3 | " + " | ".join(f"{100 * v:.1f} (1)" for v in exits["accuracy"]) + " |" in per_exit
    ablations = text.split("## DE³ ablations")[1].split("\n## ")[0]
    scores = json.loads((kept / "rte" / "de3" / "seed42" / "results.json").read_text())["scores"]
    variant_row = next(line for line in ablations.splitlines() if line.startswith("| loss.alpha=0.3 | 42 |"))
    assert variant_row.split(" | ")[2] == f"{100 * scores['calibration']['accuracy'][-1]:.1f} (1)"
    edr_calibration = [(r["speedup"], r["accuracy"]) for r in de3_run.chosen_rows if r["rule"] == "edr"]
    assert variant_row.split(" | ")[3] == f"{100 * frontier_area(edr_calibration, max(TARGETS)):.1f} (1)"
    matched = text.split("## Compute-matched control")[1].split("\n## ")[0]
    checkpoint = json.loads((kept / "rte" / "de3" / "seed42" / "results.json").read_text())["checkpoint"]
    epoch = chosen_epoch(checkpoint) or "—"
    assert f"| de3-matched | {2 * driver.EPOCHS} | {epoch} | {de3_row.split(' | ')[2]} |" in matched  # de3's copy
    paired = {line.split(" | ")[0]: line.split(" | ")[1:] for line in matched.splitlines() if " − " in line}
    same = ["+0.0 (0/1)" if r is not None else "not reached" for r in map(de3_run.calibrated_at, TARGETS)]
    assert paired["| de3-matched − de3"] == ["+0.0 (0/1)", *same[:-1], same[-1] + " |"]  # a copy of de3
    assert paired["| de3-matched − deebert"] == ["—", "—", "—", "— |"]  # no two-stage run here
    assert paired_gap({42: 0.8, 43: 0.7}, {42: 0.75, 43: 0.72, 44: 0.9}) == "+1.5 ± 4.9 (1/2)"
    assert paired_gap({42: None}, {42: 0.7}) == "not reached"
    assert paired_gap({42: 0.7, 43: 0.7}, {42: 0.7004, 43: 0.7}) == "+0.0 ± 0.0 (0/2)"
    assert chosen_epoch("ckpts/epoch01-step208.ckpt") == 2  # Lightning counts from 0
    assert chosen_epoch("ckpts/epoch00-step104.ckpt", epochs_before=3) == 4  # after a stage 1
    # a seed the matched runs lack stays out of the control's rows
    other_seed = dataclasses.replace(de3_run, seed=43, full_depth=0.123)
    by_task = {
        "rte": {"de3": [de3_run, other_seed], "de3-matched": [dataclasses.replace(de3_run, method="de3-matched")]}
    }
    partial = "\n".join(compute_matched_section(by_task, ["rte"]))
    assert (
        "### rte (seed 42)" in partial and f"| de3 | {driver.EPOCHS} | {epoch} | {de3_row.split(' | ')[2]} |" in partial
    )
    by_task["rte"]["de3-matched"].append(dataclasses.replace(other_seed, method="de3-matched"))
    assert "### rte (seeds 42, 43)" in "\n".join(compute_matched_section(by_task, ["rte"]))
    # past the fixed targets: the same two runs with every speed-up doubled, so that 4× and 5× are in reach
    past_runs = {
        r.method: dataclasses.replace(
            r,
            **{
                rows: [{**row, "speedup": 2 * row["speedup"]} for row in getattr(r, rows)]
                for rows in ("rows", "chosen_rows")
            },
        )
        for r in runs
        if r.method in ("de3", "pabee")
    }
    past = "\n".join(past_the_targets_section({"rte": {m: [r] for m, r in past_runs.items()}}, ["rte"]))
    assert "(exploratory)" in past.splitlines()[0]
    for target in PAST_TARGETS:
        block = past.split(f"### {target}× speed-up, calibrated")[1].split("###")[0]
        de3_reading, pabee_reading = (past_runs[m].calibrated_at(target) for m in ("de3", "pabee"))
        assert de3_reading is not None  # 3 layers, doubled: its fastest threshold is at 6×
        assert f"| de3 | {100 * de3_reading[0]:.1f} (1) @ {de3_reading[1]:.2f}× | {100 * de3_reading[0]:.1f} |" in block
        gap = None if pabee_reading is None else 100 * (de3_reading[0] - pabee_reading[0])
        assert (f"| pabee | {gap:+.1f} ({int(gap > 0)}/1) |" if gap is not None else "| pabee | not reached |") in block
    assert "Not tuned" in text.split("## Hyperparameters")[1]
    assert (tmp_path / "curves_rte.png").is_file()
    # the tuning runs on dev, beside the calibration areas the choice was made on
    configs = driver.CONFIGS
    for index in range(len(configs)):
        shutil.copytree(kept / "rte" / "de3" / "seed42", kept / "tuning" / f"config{index}" / "rte" / "de3" / "seed42")
    tried = {"de3": {c: 0.5 + i / 10 for i, c in enumerate(configs)}}
    (tmp_path / "tuned.json").write_text(
        json.dumps({"task": "rte", "seed": 42, "criterion": "area", "tried": tried, "picked": {"de3": configs[-1]}})
    )
    monkeypatch.setattr("benchmarks.glue_tradeoff.kept_runs.TUNING_TASK", "rte")
    tuning = load_tuning(kept)
    assert sorted(tuning) == sorted(("de3", c) for c in configs)
    tuning_text = "\n".join(tuning_section(tuning))
    upto = de3_run.fastest()
    dev_cell = f"{100 * de3_run.full_depth:.1f} / {100 * frontier_area(de3_run.points(), upto):.1f}"
    assert f"area 1–{upto:.2f}×" in tuning_text
    assert "| de3 | " + " | ".join([dev_cell] * len(configs)) + " |" in tuning_text
    assert "| de3 | 50.00 | 60.00 | 70.00 | model.optimizer.lr=0.0002 |" in tuning_text
    # README's tables are RESULTS.md's, replaced between the markers and nowhere else
    readme = f"# de3\n{README_BEGIN}\nold table\n{README_END}\nafter\n"
    updated = readme_with_tables(readme, text)
    assert updated.startswith(f"# de3\n{README_BEGIN}\n") and updated.endswith("\nafter\n")
    assert "old table" not in updated
    calibrated_2x = text.split("## All methods at 2.0× speed-up, calibrated\n\n")[1].split("\n\n")[0]
    assert calibrated_2x.startswith("| method |") and calibrated_2x in updated
    assert readme_with_tables(updated, text) == updated
    with pytest.raises(De3Error, match="no .* block"):
        readme_with_tables("# de3\n", text)


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


def test_main_jobs_share_training_only_between_equal_configurations(tmp_path, monkeypatch):
    monkeypatch.setattr(
        driver, "tuned_configs", lambda: {"pabee": "lr=1", "pcee": "lr=1", "deebert": "lr=1", "fastbert": "lr=2"}
    )
    jobs = {
        (j.task, j.directory.parent.name, j.seed): j
        for j in driver.main_jobs(tmp_path, ["sst2", "stsb"], driver.METHODS, [42])
    }
    pcee, fastbert = jobs["sst2", "pcee", 42], jobs["sst2", "fastbert", 42]
    assert pcee.trained_in == jobs["sst2", "pabee", 42].directory and pcee.extra == ("lr=1",)
    assert fastbert.stage_one_in is None and fastbert.extra == ("lr=2",)  # another configuration: its own stage 1
    assert ("stsb", "de3", 42) not in jobs  # prototypes need classes
    assert {s for (t, _, s) in jobs if t == "sst2"} == {42}  # --seeds given: no extra seeds
    matched = jobs["sst2", "de3-matched", 42]
    assert matched.method == "de3" and matched.extra[-1] == f"trainer.max_epochs={2 * driver.EPOCHS}"
    assert ("stsb", "pabee-matched", 42) not in jobs
    control = [
        (j.seed, j.task, j.directory.parent.name)
        for j in driver.main_jobs(tmp_path, ["sst2", "mrpc"], ["de3", "pabee", "badge"], [42, 43])
        if j.directory.parent.name.endswith(driver.MATCHED)
    ]  # seed-major, MRPC's cheaper seed first
    assert control[:4] == [
        (42, "mrpc", "de3-matched"),
        (42, "mrpc", "pabee-matched"),
        (42, "mrpc", "badge-matched"),
        (42, "sst2", "de3-matched"),
    ]
    assert len(control) == 12 and control[-1] == (43, "sst2", "badge-matched")
    assert driver.seeds_of("sst2", driver.SEEDS) == (42, 43, 44, 45, 46) and driver.seeds_of("rte", driver.SEEDS) == (
        42,
        43,
        44,
    )


def test_every_method_tries_the_same_configurations_and_the_best_calibration_area_is_picked(tmp_path):
    methods = ("de3", "pabee")
    jobs = driver.tuning_jobs(tmp_path, methods)
    assert sorted((j.method, j.extra) for j in jobs) == sorted((m, (c,)) for m in methods for c in driver.CONFIGS)
    scores = {"de3": (0.7, 0.9, 0.8), "pabee": (0.9, 0.7, 0.6)}  # calibration score at every speed-up
    for index, _ in enumerate(driver.CONFIGS):
        for method in methods:
            folder = driver.run_dir(tmp_path / f"config{index}", "sst2", method, 42)
            folder.mkdir(parents=True)
            rule = {"de3": "edr", "pabee": "patience"}[method]
            results = {"scores": {"calibration": {}, "validation": {}}, "config": {"exit": {"rule": rule}}}
            (folder / "results.json").write_text(json.dumps(results))
            rows = ["split,rule,threshold,speedup,accuracy"]
            rows += [f"calibration,{rule},{t},{s},{scores[method][index]}" for t, s in enumerate((1.0, 2.0, 3.0))]
            rows += [f"validation,{rule},{t},{s},0.1" for t, s in enumerate((1.0, 2.0, 3.0))]  # never chosen on
            (folder / "sweep.csv").write_text("\n".join(rows) + "\n")
    picked = driver.pick_configs(tmp_path, methods)
    assert picked["picked"] == {"de3": driver.CONFIGS[1], "pabee": driver.CONFIGS[0]}
    assert picked["tried"]["de3"][driver.CONFIGS[2]] == pytest.approx(0.8)  # a flat frontier's mean reading


def test_a_run_kept_by_an_earlier_session_is_not_run_again(tmp_path, monkeypatch):
    out, kept = tmp_path / "out", tmp_path / "kept"
    done, todo = (driver.Job(out / "rte" / m / "seed42", "rte", m, 42) for m in ("de3", "pabee"))
    copy = driver.kept_folder(done, out, kept)
    copy.mkdir(parents=True)
    (copy / "results.json").write_text(json.dumps({"task": "rte", "wall_time_s": 260.0}))
    (copy / "sweep.csv").write_text("split\n")
    ran = []
    monkeypatch.setattr(driver, "run_one", lambda job: ran.append(job) or False)
    with pytest.raises(SystemExit, match="1 runs failed"):
        driver.run_all([done, todo], out, kept)
    assert ran == [todo]  # a fresh clone resumes from the committed copies


def test_time_left_comes_from_past_runs_of_the_same_task_and_method(tmp_path):
    def job(task: str, method: str) -> driver.Job:
        return driver.Job(driver.run_dir(tmp_path, task, method, 42), task, method, 42)

    assert driver.expected_seconds([job("rte", "de3")], {}) is None
    for task, method, seconds in (("rte", "de3", 100.0), ("rte", "de3", 200.0), ("mrpc", "pabee", 60.0)):
        kept = driver.run_dir(tmp_path / "kept", task, method, int(seconds))
        kept.mkdir(parents=True)
        (kept / "results.json").write_text(json.dumps({"task": task, "wall_time_s": seconds}))
    past = driver.past_wall_times(tmp_path / "kept")
    assert past == {("rte", "de3"): [100.0, 200.0], ("mrpc", "pabee"): [60.0]}
    ablation = driver.Job(tmp_path / "sensitivity" / "rte" / "loss.alpha=0" / "seed42", "rte", "de3", 42)
    same_task_and_folder, same_task_and_method, same_folder, any_run = 150.0, 150.0, 60.0, 120.0
    jobs = [job("rte", "de3"), ablation, job("sst2", "pabee"), job("stsb", "badge")]
    assert driver.expected_seconds(jobs, past) == same_task_and_folder + same_task_and_method + same_folder + any_run


def git_repo_as_repo_root(path, monkeypatch) -> None:
    """An empty git repository at `path`, which the driver's and report's git commands then use."""
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    for key, value in (("user.name", "t"), ("user.email", "t@t")):
        subprocess.run(["git", "-C", str(path), "config", key, value], check=True)
    monkeypatch.setattr(driver, "REPO_ROOT", path)


def test_commit_waits_out_a_busy_index_and_never_stops_the_benchmark(tmp_path, monkeypatch, capsys):
    git_repo_as_repo_root(tmp_path, monkeypatch)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    (tmp_path / ".git" / "index.lock").write_text("")  # another git command at work
    driver.commit(tmp_path / "run", "a run", attempts=2, wait_s=0)
    assert "could not commit" in capsys.readouterr().out
    (tmp_path / ".git" / "index.lock").unlink()
    driver.commit(tmp_path / "run", "a run", wait_s=0)
    log = subprocess.run(
        ["git", "-C", str(tmp_path), "log", "--format=%s", "--name-only"], capture_output=True, text=True
    )
    assert log.stdout.split() == ["a", "run", "run/results.json"]
    driver.commit(tmp_path / "run", "again", wait_s=0)  # nothing new: no empty commit, no error
    assert "again" not in subprocess.run(["git", "-C", str(tmp_path), "log"], capture_output=True, text=True).stdout


def test_report_says_whether_the_training_code_changed_between_the_runs_commits(tmp_path, monkeypatch):
    git_repo_as_repo_root(tmp_path, monkeypatch)

    def commit_file(path: str, text: str) -> str:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
        driver.commit(tmp_path / path, path, wait_s=0)
        return driver.git("rev-parse", "HEAD").stdout.strip()

    first = commit_file("de3/model.py", "v1")
    benchmark_only = commit_file("benchmarks/glue_tradeoff/report.py", "v1")
    retrained = commit_file("de3/model.py", "v2")
    assert code_line([benchmark_only, first]) == (
        f"git {first[:12]}, {benchmark_only[:12]} (de3, conf, run.py identical at all of them: "
        "only the benchmark's own files changed)"
    )
    assert code_line([first, benchmark_only, retrained]).endswith(
        f"differ from {first[:12]} at {retrained[:12]}; `git diff` them)"
    )
    assert code_line([first, "unknown"]) == f"git {first[:12]}, unknown"  # nothing to compare
    uncommitted = code_line([f"{first}-dirty", benchmark_only])
    assert uncommitted.startswith(f"git {first[:12]}-dirty, {benchmark_only[:12]} (")
    assert "identical at all of them" in uncommitted and "1 of the commits -dirty" in uncommitted
    many = code_line([retrained, first, benchmark_only], listed=2)
    assert many.startswith(f"git 3 commits from {first[:12]} to {retrained[:12]}, each run's in its results.json (")


def test_every_number_the_committed_findings_quote_is_in_a_table(tmp_path, monkeypatch):
    findings = FINDINGS.read_text()
    results = (HERE / "RESULTS.md").read_text()
    assert findings.strip() in results  # RESULTS.md was generated with this reading above its tables
    assert numbers_not_in_tables(findings, results) == []
    assert stale_findings(results) is None
    stale = findings + "\nDE³ reaches 99.97 at 2×."
    assert numbers_not_in_tables(stale, results.replace(findings.strip(), stale.strip())) == ["99.97"]
    monkeypatch.setattr("benchmarks.glue_tradeoff.findings.FINDINGS", tmp_path / "findings.md")
    assert findings_lines() == [] and stale_findings(results) is None  # no reading: the tables alone
    (tmp_path / "findings.md").write_text(stale)
    assert findings_lines() == [stale.strip(), ""]
    assert stale_findings(results) == "findings.md quotes numbers no table has (stale, or beyond the tables): 99.97"


def test_ablation_overrides_are_what_hydra_reads(tmp_path):
    from benchmarks.glue_tradeoff.sensitivity import VARIANTS, chosen_variants, override, variant_jobs

    assert override("model.prototypes.detach_backbone", True) == "model.prototypes.detach_backbone=true"
    assert override("loss.alpha", 0.0) == "loss.alpha=0"
    assert override("model.prototypes.dim", 64) == "model.prototypes.dim=64"
    config = compose_config(
        ["experiment=de3", *(override(key, values[0]) for key, values in VARIANTS.items())], tmp_path
    )
    assert config.loss.alpha == 0 and config.model.prototypes.detach_backbone is True
    assert config.model.prototypes.dim == 64
    lr_only = chosen_variants(["model.optimizer.lr=0.0001"])
    assert lr_only == [("model.optimizer.lr", 1e-4)]
    (job,) = variant_jobs(tmp_path, "cola", [42], lr_only, ["model.optimizer.lr=0.0002"])
    assert job.extra == ("model.optimizer.lr=0.0001",)  # the variant replaces the tuned value
    (job,) = variant_jobs(tmp_path, "cola", [42], chosen_variants(["loss.alpha=0"]), ["model.optimizer.lr=0.0002"])
    assert job.extra == ("model.optimizer.lr=0.0002", "loss.alpha=0")
    assert job.directory == tmp_path / "sensitivity" / "cola" / "loss.alpha=0" / "seed42"
    assert len(chosen_variants(None)) == sum(map(len, VARIANTS.values()))
    with pytest.raises(SystemExit, match="unknown variant.*loss.alpha=7.*the variants are: loss.alpha=0"):
        chosen_variants(["loss.alpha=7"])


SPEEDUPS = (1.0, 1.5, 2.0, 3.0)  # one threshold per speed-up, on both splits: calibrated at t reads dev at t


def write_kept_run(kept, task: str, method: str, seed: int, rule: str, dev: dict[str, tuple[float, ...]]) -> None:
    """A finished run's kept outputs as the driver keeps them (`<kept>/<task>/<method>/seed<seed>/`):
    `dev` maps each swept rule to its dev score at `SPEEDUPS` (the first: full depth); the
    calibration split scores the same at the same speed-ups."""
    folder = driver.run_dir(kept, task, method, seed)
    folder.mkdir(parents=True)
    full = dev[rule][0]
    scores = {split: {"accuracy": [0.5, full]} for split in ("calibration", "validation")}
    results = {"task": task, "scores": scores, "config": {"seed": seed, "exit": {"rule": rule}}, "wall_time_s": 60.0}
    (folder / "results.json").write_text(json.dumps(results))
    rows = ["split,rule,params,threshold,speedup,accuracy"]
    for split in ("calibration", "validation"):
        for name, values in dev.items():
            rows += [f'{split},{name},"{{}}",{t},{s},{v}' for t, (s, v) in enumerate(zip(SPEEDUPS, values))]
    (folder / "sweep.csv").write_text("\n".join(rows) + "\n")


def without_sections(text: str, *titles: str) -> str:
    """`text` less each `## <title>` section (up to the next `## ` heading) and its header's Runs line."""
    for title in titles:
        head, found, rest = text.partition(f"## {title}\n")
        if found:
            text = head + rest[rest.index("\n## ") + 1 :] if "\n## " in rest else head
    return "\n".join(line for line in text.splitlines() if not line.startswith("- Runs: "))


def test_the_chosen_de3_is_reported_beside_the_protocols_de3(glue_dir, tmp_path, monkeypatch):
    from benchmarks.glue_tradeoff.de3_tuned import de3_tuned_section, missing_runs_line, recipes_lines

    kept, tuned = tmp_path / "kept", tmp_path / "tuned.json"
    monkeypatch.setattr("benchmarks.glue_tradeoff.tuning.TUNED", tuned)
    monkeypatch.setattr("benchmarks.glue_tradeoff.findings.FINDINGS", tmp_path / "findings.md")
    protocol = {  # seed → dev score at SPEEDUPS
        "de3": {42: (0.80, 0.79, 0.78, 0.70), 43: (0.78, 0.77, 0.74, 0.69), 44: (0.60, 0.60, 0.60, 0.60)},
        "pabee": {42: (0.82, 0.80, 0.75, 0.65), 43: (0.80, 0.79, 0.76, 0.66), 44: (0.70, 0.70, 0.70, 0.70)},
    }
    for method, by_seed in protocol.items():
        rule = "edr" if method == "de3" else "patience"
        for seed, values in by_seed.items():
            write_kept_run(kept, "rte", method, seed, rule, {rule: values, "entropy": values})
    protocol_runs = load_runs(kept)
    chosen = {  # seed → its rules' dev scores at SPEEDUPS, on the same checkpoint
        42: {"edr": (0.84, 0.83, 0.81, 0.72), "entropy": (0.84, 0.82, 0.80, 0.72)},
        43: {"edr": (0.81, 0.80, 0.79, 0.70), "entropy": (0.81, 0.81, 0.77, 0.71)},
    }
    for seed, dev in chosen.items():
        write_kept_run(kept, "rte", driver.DE3_TUNED, seed, "edr", dev)
    runs = load_runs(kept)
    assert sorted(r.seed for r in runs if r.method == driver.DE3_TUNED) == [42, 43]

    # no de3-tuned runs, no recipes: not a word of them
    learning_rates = {"task": "sst2", "seed": 42, "criterion": "area", "tried": {"de3": {"lr=1": 0.9}}}
    tuned.write_text(json.dumps({**learning_rates, "picked": {"de3": "lr=1"}}))
    before = report(protocol_runs, {}, "the command", tmp_path, glue_dir)
    assert driver.DE3_TUNED not in before and "set up well" not in before

    # the recipes picked, no de3-tuned run yet: the recipes and every run still missing, nothing else
    recipes = {
        "criterion": "area 1×–2.90×",
        "configurations": {"joint": "experiment=de3", "two-stage": "experiment=de3_two_stage"},
        "tried": {"joint": 0.9122, "two-stage": 0.9187},
        "picked": "two-stage",
    }
    tuned.write_text(json.dumps({**learning_rates, "picked": {"de3": "lr=1"}, "recipes": {"de3-tuned": recipes}}))
    picked = report(protocol_runs, {}, "the command", tmp_path, glue_dir)
    section = picked.split("## DE³ set up well, chosen fairly\n")[1].split("\n## ")[0]
    assert "| two-stage | `experiment=de3_two_stage` | 91.87 |" in section and "Picked: **two-stage**." in section
    assert "0 of 16 runs finished; still missing: rte seeds 42, 43, 44; mrpc seeds 42, 43, 44, 45, 46; " in section
    assert "### " not in section and "Until they are in" not in section  # no run to read
    assert without_sections(picked, "DE³ set up well, chosen fairly") == without_sections(before)
    # the recipes' tuning runs read on dev beside the choice, over the range given; a recipe without one: —
    seed42 = next(r for r in protocol_runs if r.method == "de3" and r.seed == 42)
    lines = recipes_lines({**learning_rates, "recipes": {"de3-tuned": recipes}}, {"two-stage": seed42}, 3.0)
    assert "| recipe | configuration | calibration area | dev: full depth / area 1–3.00× |" in lines
    assert "| joint | `experiment=de3` | 91.22 | — |" in lines
    # full depth 80; the area by trapezoids over (1, 1.5, 2, 3): (39.75 + 39.25 + 74) / 2
    assert "| two-stage | `experiment=de3_two_stage` | 91.87 | 80.0 / 76.5 |" in lines
    # the protocol's own recipe picked: de3-tuned is de3, nothing is missing
    tuned.write_text(json.dumps({**learning_rates, "recipes": {"de3-tuned": {**recipes, "picked": "joint"}}}))
    joint = "\n".join(de3_tuned_section({"rte": {}}, ["rte"]))
    assert "That is the protocol's own `de3`" in joint and "missing" not in joint

    # two seeds of rte in: they are read beside de3 on the same seeds, and every other seed is named missing
    tuned.write_text(json.dumps({**learning_rates, "picked": {"de3": "lr=1"}}))  # no recipes: the runs alone
    text = report(runs, {}, "the command", tmp_path, glue_dir)
    assert "- Runs: 8 of " in text and "(111 main, 30 compute-matched, 16 de3-tuned)" in text
    section = text.split("## DE³ set up well, chosen fairly\n")[1].split("\n## ")[0]
    assert "2 of 16 runs finished; still missing: rte seed 44; mrpc seeds 42, 43, 44, 45, 46; cola" in section
    assert "Until they are in, each table below reads the seeds there are" in section
    table = section.split("### rte (accuracy; seeds 42, 43)\n")[1].split("###")[0]
    assert "| area 1–3.00× (oracle) |" in table  # the range of rte's own table
    de3_row = next(line for line in table.splitlines() if line.startswith("| de3 | edr |"))
    assert de3_row.split(" | ")[2] == "79.0 ± 1.4 (2)"  # seeds 42 and 43 only: (80 + 78) / 2
    tuned_row = next(line for line in table.splitlines() if line.startswith("| de3-tuned | edr |"))
    cells = tuned_row.split(" | ")
    assert cells[2] == "82.5 ± 2.1 (2)" and cells[5] == "80.0 ± 1.4 (2) @ 2.00×, 2.00–2.00"
    # the area by trapezoids over (1, 1.5, 2, 3): seed 42 79.625, seed 43 77.25
    assert cells[-1] == "78.4 ± 1.7 (2) |"

    def paired_row(reading: str, method: str) -> str:
        block = section.split(f"### de3-tuned minus each method, {reading}\n")[1].split("###")[0]
        return next(line for line in block.splitlines() if line.startswith(f"| {method} |"))

    # by hand: de3-tuned minus the other on seeds 42 and 43 (its seed 44 has no pair)
    assert paired_row("full depth", "de3") == "| de3 | +3.5 ± 0.7 (2/2) |"  # +4, +3
    assert paired_row("full depth", "pabee") == "| pabee | +1.5 ± 0.7 (2/2) |"  # +2, +1
    assert paired_row("2.0× speed-up, calibrated", "de3") == "| de3 | +4.0 ± 1.4 (2/2) |"  # +3, +5
    assert paired_row("2.0× speed-up, calibrated", "pabee") == "| pabee | +4.5 ± 2.1 (2/2) |"  # +6, +3
    assert paired_row("3.0× speed-up, calibrated", "pabee") == "| pabee | +5.5 ± 2.1 (2/2) |"  # +7, +4
    assert paired_row("2.0× speed-up, calibrated", "deebert") == "| deebert | — |"  # no run of it
    # EDR against entropy on the same de3-tuned checkpoints, seed by seed
    rules = text.split("## Rule effect: every exit rule on the same `de3-tuned` runs\n")[1].split("\n## ")[0]
    assert "| edr − entropy, paired by seed | +0.0 ± 1.4 (1/2) | +1.5 ± 0.7 (2/2) | -0.5 ± 0.7 (0/2) |" in rules
    assert "| entropy | 81.5 ± 0.7 (2) @ 1.50×, 1.50–1.50 |" in rules
    # a row of its own in the tables of all methods, right after de3's
    headline = text.split("## All methods at 2.0× speed-up, calibrated\n")[1].split("\n## ")[0]
    methods = [line.split(" | ")[0] for line in headline.splitlines() if line.startswith("| ")]
    assert methods[1:3] == ["| de3", "| de3-tuned"]  # after the header
    assert "| de3-tuned | 80.0 ± 1.4 (2) @ 2.00×, 2.00–2.00 | 80.0 |" in headline
    # its own paired gaps past the targets, after de3's
    past = text.split("## Past the protocol's targets")[1].split("\n## ")[0]
    assert past.index("de3 minus each baseline at 4.0×:") < past.index("de3-tuned minus each baseline at 4.0×:")
    # and every other table as without them
    rest = without_sections(
        text, "DE³ set up well, chosen fairly", "Rule effect: every exit rule on the same `de3-tuned` runs"
    )
    rest = re.sub(r"de3-tuned minus each baseline at [\d.]+×:\n\n(\|.*\n)+\n", "", rest)
    assert "\n".join(line for line in rest.splitlines() if not line.startswith("| de3-tuned |")) == without_sections(
        before
    )

    # every planned run in: none missing
    every = {
        task: {driver.DE3_TUNED: [dataclasses.replace(runs[-1], task=task, seed=seed) for seed in seeds]}
        for task, seeds in ((t, driver.seeds_of(t, driver.SEEDS)) for t in driver.TASKS)
    }
    assert missing_runs_line(every) == "All 16 `de3-tuned` runs are in."
    # a run whose frontier stops short of the table's range has no area there
    short = dataclasses.replace(runs[-1], rows=[r for r in runs[-1].rows if r["speedup"] <= 2.0])
    assert area_cell([short], 3.0) == "not reached"
