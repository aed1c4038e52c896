"""The runs' kept outputs read back (`results.json`, `sweep.csv`; see `run.py` here): one `Run` per
finished (task, method, seed) folder, with the oracle and calibrated readings every table takes from it."""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks.glue_tradeoff.run import (
    CONFIGS,
    DE3_RECIPES,
    DE3_TUNED,
    EPOCHS,
    METHODS,
    STAGE_ONE_OF,
    TUNING_SEED,
    TUNING_TASK,
    recipe_tuning_dir,
    run_dir,
    tuned_configs,
)
from de3.data.tasks import GLUE_TASKS
from de3.sweep import frontier_area, frontier_score, reaching

CHECKPOINT_EPOCH = re.compile(r"epoch(\d+)")  # Lightning's 0-based epoch in a checkpoint's file name


def read_sweep_csv(path: Path) -> list[dict]:
    """`sweep.csv` (or `edr_lambda.csv`) rows with their numbers as floats."""
    with open(path, newline="") as handle:
        return [
            {k: (v if k in ("split", "rule", "params") else float(v)) for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]


@dataclass
class Run:
    """One finished (task, method, seed) run: its sweep points on dev (`rows`) and on the split
    its thresholds were chosen on (`chosen_rows`, `chosen_on`: the calibration split; dev
    itself in runs made without one)."""

    task: str
    method: str
    seed: int
    rule: str
    full_depth: float
    per_exit: list[float]  # dev, exit 1 … L
    chosen_full_depth: float
    rows: list[dict]
    chosen_rows: list[dict]
    chosen_on: str
    wall_time_s: float
    commit: str | None
    folder: Path
    epoch: int | None = None  # 1-based: the epoch after which the chosen checkpoint was saved

    @property
    def metric(self) -> str:
        return GLUE_TASKS[self.task].main_metric

    def points(self, rule: str | None = None) -> list[tuple[float, float]]:
        return [(r["speedup"], r[self.metric]) for r in self.rows if r["rule"] == (rule or self.rule)]

    def score_at(self, target: float, rule: str | None = None) -> float | None:
        """Oracle on dev: dev's own Pareto frontier read at `target` (interpolated)."""
        return frontier_score(self.points(rule), target)[0]

    def fastest(self) -> float:
        """The largest speed-up the own rule reaches on dev."""
        return max(s for s, _ in self.points())

    def chosen_area(self, upto: float) -> float | None:
        """The area under the own rule's frontier on the split thresholds are chosen on, 1×–`upto`
        (None where it never gets that fast)."""
        points = [(r["speedup"], r[self.metric]) for r in self.chosen_rows if r["rule"] == self.rule]
        return frontier_area(points, upto) if frontier_score(points, upto)[0] is not None else None

    def calibrated_at(self, target: float, rule: str | None = None) -> tuple[float, float] | None:
        """(dev score, dev speed-up) at the threshold that reached `target` on the calibration
        split; None where the rule never got that fast there."""
        return calibrated_reading(self.chosen_rows, self.rows, rule or self.rule, target, self.metric)


ByTask = dict[str, dict[str, list[Run]]]  # task → method → its finished runs


def calibrated_reading(
    chosen_rows: list[dict], dev_rows: list[dict], rule: str, target: float, metric: str, params: str | None = None
) -> tuple[float, float] | None:
    """Dev's (score, speed-up) at the slowest threshold reaching `target` on the other split."""

    def of(rows: list[dict]) -> list[dict]:
        return [r for r in rows if r["rule"] == rule and (params is None or r["params"] == params)]

    point = reaching(of(chosen_rows), target)
    if point is None:
        return None
    row = next(r for r in of(dev_rows) if r["threshold"] == point["threshold"])
    return row[metric], row["speedup"]


def load_run(folder: Path, method: str) -> Run | None:
    """A finished run's folder (results.json and sweep.csv), or None while it is unfinished."""
    if not ((folder / "results.json").is_file() and (folder / "sweep.csv").is_file()):
        return None
    results = json.loads((folder / "results.json").read_text())
    spec = GLUE_TASKS[results["task"]]
    dev, chosen_on = spec.eval_splits[0], next(iter(results["scores"]))
    rows = read_sweep_csv(folder / "sweep.csv")
    config = results["config"]
    return Run(
        task=spec.name,
        method=method,
        seed=int(config["seed"]),
        rule="patience" if spec.is_regression else config["exit"]["rule"],
        full_depth=results["scores"][dev][spec.main_metric][-1],
        per_exit=results["scores"][dev][spec.main_metric],
        chosen_full_depth=results["scores"][chosen_on][spec.main_metric][-1],
        rows=[r for r in rows if r["split"] == dev],
        chosen_rows=[r for r in rows if r["split"] == chosen_on],
        chosen_on=chosen_on,
        wall_time_s=results["wall_time_s"],
        commit=results.get("git_commit"),
        folder=folder,
        # a run that starts from another's stage 1 counts its epochs after that stage's
        epoch=chosen_epoch(results.get("checkpoint"), EPOCHS if method in STAGE_ONE_OF else 0),
    )


def chosen_epoch(checkpoint: str | None, epochs_before: int = 0) -> int | None:
    """The 1-based epoch of the whole training after which `checkpoint` (results.json's path)
    was saved, its run having started `epochs_before` epochs in; None without a checkpoint."""
    match = CHECKPOINT_EPOCH.search(Path(checkpoint).name) if checkpoint else None
    return epochs_before + int(match.group(1)) + 1 if match else None


def load_runs(out: Path) -> list[Run]:
    """The main benchmark's finished runs, `<out>/<task>/<method>/seed<s>/`."""
    folders = sorted(p.parent for p in out.glob("*/*/seed*/results.json"))
    return [run for folder in folders if (run := load_run(folder, folder.parent.name)) is not None]


def load_tuning(out: Path) -> dict[tuple[str, str], Run]:
    """(method, configuration) → the finished tuning run (`run.py --tune`), from `<out>/tuning/`."""
    found = {}
    for index, config in enumerate(CONFIGS):
        for method in METHODS:
            folder = run_dir(out / "tuning" / f"config{index}", TUNING_TASK, method, TUNING_SEED)
            if (run := load_run(folder, method)) is not None:
                found[method, config] = run
    return found


def load_recipe_tuning(out: Path) -> dict[str, Run]:
    """DE³ recipe name → its finished tuning run (`run.py --tune-de3`), from `<out>/tuning/`; empty
    before the learning rates are tuned."""
    configs = tuned_configs()
    if any(recipe.lr_of not in configs for recipe in DE3_RECIPES.values()):
        return {}
    found = {}
    for name, recipe in DE3_RECIPES.items():
        method = "de3" if recipe.is_protocol_de3() else DE3_TUNED
        if (run := load_run(recipe_tuning_dir(out / "tuning", name, configs), method)) is not None:
            found[name] = run
    return found


def load_sensitivity(out: Path) -> dict[str, dict[str, list[Run]]]:
    """task → variant ("loss.alpha=0.3") → finished runs, from `<out>/sensitivity/`."""
    found: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for results_path in sorted((out / "sensitivity").glob("*/*/seed*/results.json")):
        folder = results_path.parent
        if (run := load_run(folder, "de3")) is not None:
            found[run.task][folder.parent.name].append(run)
    return found
