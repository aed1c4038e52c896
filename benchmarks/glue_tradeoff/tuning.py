"""The hyperparameter section: what each method tried and picked, and the tuning runs read on dev."""

from __future__ import annotations

import json

from benchmarks.glue_tradeoff.cells import section, table_header
from benchmarks.glue_tradeoff.kept_runs import Run
from benchmarks.glue_tradeoff.run import TUNED
from de3.sweep import frontier_area


def tuned_file() -> dict | None:
    """`tuned.json` (written by `run.py --tune` and `--tune-de3`), None before tuning."""
    return json.loads(TUNED.read_text()) if TUNED.is_file() else None


def dev_range(tuning: dict[tuple[str, str], Run]) -> float | None:
    """The fastest speed-up every tuning run reaches on dev: the range its dev areas are read over."""
    return min((run.fastest() for run in tuning.values()), default=None)


def tuning_section(tuning: dict[tuple[str, str], Run]) -> list[str]:
    """What each method tried and picked (`tuned.json`, written by `run.py --tune`), and the same
    tuning runs read on dev, which played no part in the choice."""
    tuned = tuned_file()
    if tuned is None:
        return section("Hyperparameters", "Not tuned: every run used the configs' defaults (`run.py --untuned`).")
    configs = list(next(iter(tuned["tried"].values())))
    lines = section(
        "Hyperparameters: the same configurations tried by every method",
        f"On {tuned['task']} seed {tuned['seed']}, each method's {tuned['criterion']} (×100) per configuration; "
        "the largest is picked and used for every task and seed.",
    )
    lines += table_header("method", *configs, "picked")
    for method, areas in tuned["tried"].items():
        cells = [f"{100 * areas[c]:.2f}" for c in configs]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {tuned['picked'][method]} |")
    lines.append("")
    if not tuning:
        return lines
    upto = dev_range(tuning)
    lines += [
        f"The same runs on dev, which the choice did not see: full depth / area 1–{upto:.2f}× under dev's "
        "Pareto frontier of the method's own rule (×100). Where these order the configurations differently "
        "from the calibration split, the choice carries the split's noise into every task.",
        "",
        *table_header("method", *configs),
    ]
    for method in tuned["tried"]:
        runs = [tuning.get((method, c)) for c in configs]
        cells = [
            "—" if run is None else f"{100 * run.full_depth:.1f} / {100 * frontier_area(run.points(), upto):.1f}"
            for run in runs
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]
