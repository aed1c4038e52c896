"""DE³ varied one thing at a time on its own runs: the exit rule, EDR's λ, and the training
changes of sensitivity.py."""

from __future__ import annotations

import json

from benchmarks.glue_tradeoff.cells import TARGETS, calibrated, calibrated_cell, cell, mean_std, section, table_header
from benchmarks.glue_tradeoff.kept_runs import ByTask, Run, calibrated_reading, read_sweep_csv
from benchmarks.glue_tradeoff.paired import paired_gap, scores_by_seed
from benchmarks.glue_tradeoff.run import LAMBDA_FILE, LAMBDAS
from de3.data.tasks import GLUE_TASKS

RULE_ORDER = ("edr", "dr", "entropy", "maxprob", "patience", "pcee", "dge")


def rule_effect_section(
    by_task: ByTask,
    tasks: list[str],
    method: str = "de3",
    runs_named: str = "experiment=de3",
    paired_rules: tuple[str, str] | None = None,
) -> list[str]:
    """Every rule on the same runs of `method` (called `runs_named`): the rule's effect apart from
    training's; with `paired_rules` (a, b), a last row of a minus b on the same checkpoints, seed by
    seed. Nothing without runs of `method`."""
    found = [(task, runs) for task in tasks if (runs := by_task[task].get(method))]
    if not found:
        return []
    text = "Same checkpoints, so differences here come from the exit rule alone. Calibrated readings."
    if paired_rules:
        first, second = paired_rules
        text += (
            f" Last row: {first} minus {second} on the same run, seed by seed (×100, mean ± std over seeds, and "
            f"on how many seeds {first} scored higher), each rule at its own calibrated threshold."
        )
    lines = section(f"Rule effect: every exit rule on the same `{runs_named}` runs", text)
    for task, runs in found:
        rules = [r for r in RULE_ORDER if any(row["rule"] == r for row in runs[0].rows)]
        lines += [
            f"### {task}",
            "",
            *table_header("rule", *(f"{t}×" for t in TARGETS)),
        ]
        for rule in rules:
            lines.append(f"| {rule} | " + " | ".join(calibrated(runs, t, rule)[0] for t in TARGETS) + " |")
        if paired_rules:
            gaps = [paired_gap(*(scores_by_seed(runs, t, rule) for rule in paired_rules)) for t in TARGETS]
            lines.append(f"| {' − '.join(paired_rules)}, paired by seed | " + " | ".join(gaps) + " |")
        lines.append("")
    return lines


def lambda_section(
    by_task: ByTask, tasks: list[str], method: str = "de3", runs_named: str = "experiment=de3"
) -> list[str]:
    """EDR's λ re-simulated from the exit caches of `method`'s runs (called `runs_named`) by the
    driver (`edr_lambda.csv`; no retraining: λ only enters the rule). Nothing without such runs."""
    if not any((r.folder / LAMBDA_FILE).is_file() for task in tasks for r in by_task[task].get(method, [])):
        return []
    lines = section(
        f"EDR's λ, re-simulated from the `{runs_named}` runs' exit caches",
        "EDR = (λ + 1) / (λ/DR + 1/Entropy): λ = 0 is entropy alone, large λ approaches DR alone. "
        "Calibrated readings (thresholds chosen on calibration for each λ, scored on dev).",
    )
    for task in tasks:
        runs = [r for r in by_task[task].get(method, []) if (r.folder / LAMBDA_FILE).is_file()]
        if not runs:
            continue
        lines += [f"### {task}", "", *table_header("λ", *(f"{t}×" for t in TARGETS))]
        swept = [(r, read_sweep_csv(r.folder / LAMBDA_FILE)) for r in runs]
        for lam in LAMBDAS:
            params = json.dumps({"lam": lam}, sort_keys=True)
            cells = [
                calibrated_cell(
                    [
                        calibrated_reading(
                            [row for row in rows if row["split"] == run.chosen_on],
                            [row for row in rows if row["split"] == GLUE_TASKS[task].eval_splits[0]],
                            "edr",
                            t,
                            run.metric,
                            params,
                        )
                        for run, rows in swept
                    ]
                )[0]
                for t in TARGETS
            ]
            lines.append(f"| {lam:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def ablations_section(by_task: ByTask, sensitivity: dict[str, dict[str, list[Run]]]) -> list[str]:
    """DE³'s ablations one change at a time (sensitivity.py), one row per run, beside the defaults'
    runs of the same seeds: first on the calibration split, where a variant may be chosen, then
    dev's calibrated readings."""
    if not sensitivity:
        return []
    upto = max(TARGETS)
    lines = section(
        "DE³ ablations, one change at a time",
        "Defaults α = 1, τ = 1, d = hidden size, γ = 0.1, mapping layers trained with the backbone (the main",
        "de3 runs of the same seeds). Calibration columns: the split the thresholds are chosen on (full depth,",
        f"and the mean score under EDR's Pareto frontier over 1–{upto:g}×); a variant is judged there. Dev",
        "columns: EDR and, on the same checkpoints, entropy, at the calibrated thresholds.",
    )
    for task, variants in sensitivity.items():
        seeds = {r.seed for runs in variants.values() for r in runs}
        default = [r for r in by_task[task].get("de3", []) if r.seed in seeds]
        lines += [
            f"### {task}",
            "",
            *table_header(
                "variant",
                "seed",
                "calibration full depth",
                f"calibration EDR area 1–{upto:g}×",
                "dev full depth",
                *(f"dev EDR {t}×" for t in TARGETS),
                "dev entropy 2.0×",
                names=2,
            ),
        ]
        for name, runs in [("defaults", default), *sorted(variants.items())]:
            for run in sorted(runs, key=lambda r: r.seed):
                area = run.chosen_area(upto)
                cells = [
                    mean_std([run.chosen_full_depth]),
                    mean_std([area]) if area is not None else "not reached",
                    cell([run], None)[0],
                    *(calibrated([run], t)[0] for t in TARGETS),
                    calibrated([run], 2.0, "entropy")[0],
                ]
                lines.append(f"| {name} | {run.seed} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
