"""benchmarks/serving.py smoke-run for about a second per cell on a tiny trained SST-2 run: its
servers start, answer under load, stop, and the markdown tables come out whole; and the servers
it starts and the comparisons it makes, checked without serving."""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.serving import Cell, ServerSpec, best_batch_size_table, server_commands
from de3.jobs import train
from de3.models.exit_rules import RULES, validate_threshold
from de3.thresholds import never_exits, threshold_out_of_range
from tests.conftest import REPO, compose_config

RUN = ["task=sst2", "backbone=tiny_bert", "backbone.config_overrides.num_hidden_layers=3", "debug=fast"]


def test_serving_benchmark_smoke_run(tmp_path, glue_dir):
    run = tmp_path / "run"
    run.mkdir()
    train(compose_config([*RUN, f"data.data_dir={glue_dir}", "callbacks.progress_bar=null"], run))
    run_dir = Path(json.loads((run / "results.json").read_text())["checkpoint"]).parent.parent
    output = tmp_path / "serving.md"
    command = [sys.executable, "-m", "benchmarks.serving", str(run_dir), "--targets", "2", "--no-full"]
    command += ["--concurrency", "2", "--seconds", "1", "--rounds", "2", "--warmup", "0.2", "--glue-dir", str(glue_dir)]
    command += ["--max-batch-size", "1", "2", "--fast-queue", "on", "--output", str(output)]
    finished = subprocess.run(command, cwd=REPO, check=True, timeout=600, capture_output=True, text=True)

    assert "round 2/2: 2x+fast_queue@2, concurrency 2: " in finished.stderr  # progress, one line per cell and round
    markdown = output.read_text()
    assert f"- Command: `python -m benchmarks.serving {run_dir} --targets 2 --no-full" in markdown
    assert "- Machine: " in markdown and re.search(r"- Date: \d{4}-\d\d-\d\d", markdown)
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "concurrency" not in line]
    assert len(rows) == 4 + 2  # the anchor and 2× at each max batch size; then each at its best
    for anchor, target in (rows[:2], rows[2:4]):  # each early exit server against the anchor at its batch size
        anchor, target = anchor.split(" | "), target.split(" | ")
        assert anchor[3] == "1.00"  # the layer ratio: every answer from the last layer
        assert anchor[5].startswith("1.00 (1.00–1.00)") and anchor[6] == ""  # ÷ anchor; no goal for itself
        assert re.fullmatch(r"[\d.]+ \([\d.]+–[\d.]+\)", target[4])  # req/s, median (min–max) over 2 rounds
        assert re.fullmatch(r"[\d.]+ \((met|not met)\)", target[6])
        assert float(target[10].rstrip(" |")) > 0  # the answers' own latency_ms
    assert rows[2].startswith("| `AutoModelForSequenceClassification` (anchor), fast_queue | 2 | 2 |")
    assert rows[3].startswith("| early exit at 2x (entropy), fast_queue | 2 | 2 |")
    assert re.match(r"\| early exit at 2x \(entropy\), fast_queue \| 2 \| [12] \| ", rows[5])
    raw = json.loads(output.with_suffix(".json").read_text())  # what the tables were made from
    cells = [(cell["server"], cell["fast_queue"], cell["max_batch_size"], len(cell["rates"])) for cell in raw]
    assert cells == [("anchor", True, 1, 2), ("2x", True, 1, 2), ("anchor", True, 2, 2), ("2x", True, 2, 2)]
    assert set(raw[0]["exit_layers"]) == {"3"} and sum(raw[1]["exit_layers"].values()) > 0


def test_every_variant_is_served_at_every_batch_size_over_each_transport(tmp_path):
    args = argparse.Namespace(
        run_dir=tmp_path, rule="edr", full=True, targets=[2.0], max_batch_size=[8, 32], batch_timeout=0.01
    )
    args.workers, args.device, args.max_seq_length, args.fast_queue = 1, "cpu", None, "both"
    commands = server_commands(args, num_layers=6)
    names = [spec.name for spec in commands]
    assert names == [
        *("anchor@8", "full@8", "2x@8", "anchor@32", "full@32", "2x@32"),
        *("anchor+fast_queue@8", "full+fast_queue@8", "2x+fast_queue@8"),
        *("anchor+fast_queue@32", "full+fast_queue@32", "2x+fast_queue@32"),
    ]
    anchor = commands[ServerSpec("anchor", True, 32)]
    assert "--serve-anchor" in anchor and "--max-batch-size=32" in anchor and "--fast-queue=on" in anchor
    early_exit = commands[ServerSpec("2x", False, 8)]
    assert {"mode=serve", "exit.target_speedup=2.0", "serve.max_batch_size=8", "serve.fast_queue=false"} <= set(
        early_exit
    )
    assert ServerSpec("2x", True, 32).anchor == ServerSpec("anchor", True, 32)


def test_each_server_at_its_best_batch_size_is_compared_with_the_anchor_at_its_best():
    args = argparse.Namespace(rule="edr", max_batch_size=[8, 32])
    rates = {  # two rounds each; the anchor serves best at 8, early exit at 32
        ("anchor", 8): [100.0, 110.0],
        ("anchor", 32): [90.0, 95.0],
        ("2x", 8): [150.0, 160.0],
        ("2x", 32): [170.0, 187.0],
    }
    cells = {}
    for (variant, size), per_round in rates.items():
        layers = [6] * 10 if variant == "anchor" else [3] * 10  # layer ratio 2 for early exit
        cells[ServerSpec(variant, False, size), 4] = Cell(rates=per_round, exit_layers=layers)
    rows = best_batch_size_table(args, cells, num_layers=6)[2:]
    assert rows[0].split(" | ")[1:] == ["4", "8", "1.00", "105.0 (100.0–110.0)", "1.00 (1.00–1.00)", " |"]
    # 170/100 and 187/110, both 1.70: ÷ layer ratio 2 → 0.85
    expected = "| early exit at 2x (edr) | 4 | 32 | 2.00 | 178.5 (170.0–187.0) | 1.70 (1.70–1.70) | 0.85 (not met) |"
    assert rows[1] == expected


def test_the_full_depth_server_gets_a_threshold_every_rule_accepts():
    for rule in RULES.values():
        threshold = never_exits(rule.name, num_layers=6)
        assert validate_threshold(rule, threshold) == threshold
        assert threshold_out_of_range(rule, threshold) is None
