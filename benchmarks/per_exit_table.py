"""Collect the `results.json` of a multirun into one markdown table of per-exit dev scores.

python benchmarks/per_exit_table.py logs/bench_per_exit --command "python run.py -m ..." \
    > benchmarks/per_exit_minilm.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} CPU cores ({cpu}), no GPU, torch {torch.__version__}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory")
    parser.add_argument("--command", required=True, help="the command that produced the sweep")
    args = parser.parse_args()
    runs = [json.loads(p.read_text()) for p in sorted(args.sweep_dir.glob("*/results.json"))]
    if not runs:
        raise SystemExit(f"no results.json under {args.sweep_dir}")
    num_exits = max(len(v) for run in runs for m in run["scores"].values() for v in m.values())
    print("# Per-exit dev scores, jointly trained multi-exit MiniLM\n")
    print(f"- Command: `{args.command}`")
    print(f"- Machine: {machine()}")
    print(f"- Date: {datetime.date.today().isoformat()}")
    print(f"- Total wall time: {sum(r['wall_time_s'] for r in runs) / 60:.1f} min (training + evaluation)")
    print("- Scores ×100 on the official dev split, from the best checkpoint (final exit's main metric).\n")
    print("| task | metric | " + " | ".join(f"exit {m}" for m in range(1, num_exits + 1)) + " | wall time |")
    print("|---|---|" + "---:|" * num_exits + "---:|")
    for run in runs:
        for split, metrics in run["scores"].items():
            for metric, values in metrics.items():
                cells = " | ".join(f"{100 * v:.1f}" for v in values)
                name = run["task"] if split == "validation" else f"{run['task']} ({split})"
                print(f"| {name} | {metric} | {cells} | {run['wall_time_s'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
