"""benchmarks/serving.py smoke-run for about a second per cell on a tiny trained SST-2 run: its
servers start, answer under load, stop, and the markdown table comes out whole."""

import json
import re
import subprocess
import sys
from pathlib import Path

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
    command += ["--fast-queue", "both", "--output", str(output)]
    subprocess.run(command, cwd=REPO, check=True, timeout=600)

    markdown = output.read_text()
    assert f"- Command: `python -m benchmarks.serving {run_dir} --targets 2 --no-full" in markdown
    assert "- Machine: " in markdown and re.search(r"- Date: \d{4}-\d\d-\d\d", markdown)
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "concurrency" not in line]
    assert len(rows) == 4  # the anchor and 2×, at one concurrency, over either transport
    for anchor, target in (rows[:2], rows[2:]):  # each early exit server against its own transport's anchor
        anchor, target = anchor.split(" | "), target.split(" | ")
        assert anchor[2] == "1.00"  # the layer ratio: every answer from the last layer
        assert anchor[4].startswith("1.00 (1.00–1.00)") and anchor[5] == ""  # ÷ anchor; no goal for itself
        assert re.fullmatch(r"[\d.]+ \([\d.]+–[\d.]+\)", target[3])  # req/s, median (min–max) over 2 rounds
        assert re.fullmatch(r"[\d.]+ \((met|not met)\)", target[5])
        assert float(target[9].rstrip(" |")) > 0  # the answers' own latency_ms
    assert rows[2].startswith("| `AutoModelForSequenceClassification` (anchor), fast_queue | 2 |")
    assert rows[3].startswith("| early exit at 2x (entropy), fast_queue | 2 |")
    raw = json.loads(output.with_suffix(".json").read_text())  # what the table was made from
    cells = [(cell["server"], cell["concurrency"], len(cell["rates"])) for cell in raw]
    assert cells == [("anchor", 2, 2), ("2x", 2, 2), ("anchor+fast_queue", 2, 2), ("2x+fast_queue", 2, 2)]
    assert set(raw[0]["exit_layers"]) == {"3"} and sum(raw[1]["exit_layers"].values()) > 0


def test_the_full_depth_server_gets_a_threshold_every_rule_accepts():
    for rule in RULES.values():
        threshold = never_exits(rule.name, num_layers=6)
        assert validate_threshold(rule, threshold) == threshold
        assert threshold_out_of_range(rule, threshold) is None
