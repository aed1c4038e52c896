"""BADGE's bypasses with and without stopping internal-exit gradients at the block boundary.

python -m benchmarks.badge_bypass > benchmarks/badge_bypass.md

Two runs of `loss=badge` on all-MiniLM-L6-v2 and a seeded slice of SST-2, identical but for
`model.bypass.detach_backbone` (false: internal exits' gradients flow through the bypass's
residual path into the backbone; true: they stop at the bypass's input). Each run's folder
holds its results.json and sweep.csv; this script reads them and prints per-exit dev accuracy
and the DGE rule's accuracy at the target speed-ups.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.per_exit_table import machine
from de3.sweep import summarize
from de3.utils.config import REPO_ROOT

SETTINGS = (
    "task=sst2",
    "backbone=minilm",
    "loss=badge",
    "logger=csv",
    "data.train_limit=2000",
    "data.max_seq_length=64",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "seed=42",
)
VARIANTS = {"gradients into the backbone (default)": "false", "stopped at the bypass": "true"}
TARGETS = (1.5, 2.0, 3.0)


def run_variant(detach: str, folder: Path) -> float:
    """Train one variant into `folder` (skipped when it already holds results); wall seconds."""
    if (folder / "results.json").is_file() and (folder / "sweep.csv").is_file():
        return json.loads((folder / "results.json").read_text())["wall_time_s"]
    command = [sys.executable, "run.py", *SETTINGS, f"model.bypass.detach_backbone={detach}", f"hydra.run.dir={folder}"]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, check=True, env={"HF_HUB_OFFLINE": "1", **os.environ})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "logs" / "badge_bypass")
    parser.add_argument("--report-only", action="store_true", help="report finished runs, start none")
    args = parser.parse_args()
    rows = [
        "| internal-exit gradients | "
        + " | ".join(f"exit {m}" for m in range(1, 7))
        + " | "
        + " | ".join(f"DGE @ {t}×" for t in TARGETS)
        + " | train + eval wall time |",
        "|---|" + "---:|" * (6 + len(TARGETS) + 1),
    ]
    for label, detach in VARIANTS.items():
        folder = args.out / f"detach_backbone-{detach}"
        if args.report_only and not (folder / "results.json").is_file():
            rows.append(f"| {label} | not finished when this file was written |" + " |" * (6 + len(TARGETS)))
            continue
        seconds = run_variant(detach, folder)
        accuracy = json.loads((folder / "results.json").read_text())["scores"]["validation"]["accuracy"]
        points = [
            {**r, "speedup": float(r["speedup"]), "threshold": float(r["threshold"]), "accuracy": float(r["accuracy"])}
            for r in csv.DictReader(open(folder / "sweep.csv"))
            if r["split"] == "validation" and r["rule"] == "dge"
        ]
        targets = summarize(points, "accuracy", TARGETS)["validation"]["rules"]["dge"]["targets"]
        cells = ["—" if p is None else f"{100 * p['accuracy']:.2f} ({p['speedup']:.2f}×)" for p in targets.values()]
        rows.append(
            f"| {label} | "
            + " | ".join(f"{100 * a:.2f}" for a in accuracy)
            + " | "
            + " | ".join(cells)
            + f" | {seconds:.0f} s |"
        )
    settings = " ".join(SETTINGS)
    print("# BADGE bypasses: internal-exit gradients into the backbone or stopped at the block boundary\n")
    print(
        f"- Command: `python -m benchmarks.badge_bypass > benchmarks/badge_bypass.md`, which runs "
        f"`python run.py {settings} model.bypass.detach_backbone=false|true`"
    )
    print(f"- Machine: {machine()}, shared with parallel work (wall times are indicative only)")
    print(f"- Date: {datetime.date.today().isoformat()}")
    print(
        "- Scores: SST-2 dev accuracy ×100 (872 sentences), one seed, one short epoch on 2,000 training "
        "sentences: a reading of the direction, not of the size, of the effect.\n"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
