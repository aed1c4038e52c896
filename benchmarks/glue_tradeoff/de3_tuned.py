"""The chosen DE³ (`de3-tuned`, issue 32): DE³'s open design choices tried as configurations on the
tuning task and seed and picked by the learning rates' criterion (`run.py --tune-de3`, tuned.json's
`recipes`), then run on every task and seed beside the protocol's `de3` (`--methods de3-tuned`).
Its section says what was tried and picked and which runs are still missing, and reads the runs
there are with the task tables' rows and the de3 tables' paired gaps."""

from __future__ import annotations

from benchmarks.glue_tradeoff.cells import TARGETS, plural, section, table_header
from benchmarks.glue_tradeoff.kept_runs import ByTask, Run
from benchmarks.glue_tradeoff.paired import minus_each_baseline
from benchmarks.glue_tradeoff.run import DE3_RECIPES, DE3_TUNED, SEEDS, TASKS, applicable, seeds_of
from benchmarks.glue_tradeoff.tables import area_range, method_row, method_rows_header
from benchmarks.glue_tradeoff.tuning import tuned_file
from de3.data.tasks import GLUE_TASKS
from de3.sweep import frontier_area


def planned_seeds(method: str) -> dict[str, tuple[int, ...]]:
    """task → the seeds the protocol runs `method` with, on every task it applies to."""
    return {task: seeds_of(task, SEEDS) for task in TASKS if applicable(task, method)}


def seed_list(seeds: list[int]) -> str:
    """`seeds` as a heading names them: 'seed 44', 'seeds 45, 46'."""
    return f"{plural(len(seeds), 'seed')} {', '.join(map(str, seeds))}"


def missing_runs_line(by_task: ByTask) -> str:
    """How many of `de3-tuned`'s planned runs are in, and which tasks and seeds are still missing."""
    planned = planned_seeds(DE3_TUNED)
    total = sum(map(len, planned.values()))
    missing = {
        task: [s for s in seeds if s not in {r.seed for r in by_task.get(task, {}).get(DE3_TUNED, [])}]
        for task, seeds in planned.items()
    }
    if not any(missing.values()):
        return f"All {total} `{DE3_TUNED}` runs are in."
    done = total - sum(map(len, missing.values()))
    named = "; ".join(f"{task} {seed_list(seeds)}" for task, seeds in missing.items() if seeds)
    line = f"**`{DE3_TUNED}`: {done} of {total} runs finished; still missing: {named}.**"
    if done:
        line += (
            " Until they are in, each table below reads the seeds there are (named per task), and each paired gap "
            "the seeds both sides have."
        )
    return line


def picks_protocol_de3(recipes: dict) -> bool:
    """Whether `--tune-de3` picked the recipe that trains as the protocol's `de3` (then `de3-tuned` has no runs)."""
    return DE3_RECIPES[recipes["picked"]].is_protocol_de3()


def recipes_lines(tuned: dict, recipe_runs: dict[str, Run], dev_upto: float | None = None) -> list[str]:
    """What `--tune-de3` tried (each recipe's configuration and calibration area) and picked, and
    the same tuning runs (`recipe_runs`, recipe → run) read on dev, which played no part in the
    choice: full depth and the area 1×–`dev_upto` (the learning rates' dev range; else the
    recipes' own)."""
    recipes = tuned["recipes"][DE3_TUNED]
    picked = f"Picked: **{recipes['picked']}**."
    if picks_protocol_de3(recipes):
        picked += f" That is the protocol's own `de3`, whose runs every table above reads: `{DE3_TUNED}` has none."
    upto = dev_upto or min((run.fastest() for run in recipe_runs.values()), default=None)
    intro = (
        f"The recipes tried on {tuned['task']} seed {tuned['seed']}, each at the learning rate tuned above for the "
        f"method it builds on, and judged as the learning rates were: the {recipes['criterion']} (EDR; ×100); the "
        "largest is picked."
    )
    columns = ["recipe", "configuration", "calibration area"]
    if upto is not None:
        intro += (
            " Beside it, the same runs on dev, which the choice did not see (full depth, and the area under dev's "
            "Pareto frontier of EDR; ×100)."
        )
        columns.append(f"dev: full depth / area 1–{upto:.2f}×")
    rows = []
    for name, area in recipes["tried"].items():
        cells = [name, f"`{recipes['configurations'][name]}`", f"{100 * area:.2f}"]
        if upto is not None:
            run = recipe_runs.get(name)
            cells.append(
                "—" if run is None else f"{100 * run.full_depth:.1f} / {100 * frontier_area(run.points(), upto):.1f}"
            )
        rows.append("| " + " | ".join(cells) + " |")
    return [
        intro,
        "",
        *table_header(*columns, names=2),
        *rows,
        "",
        picked,
        "",
    ]


def de3_tuned_section(
    by_task: ByTask, tasks: list[str], recipe_runs: dict[str, Run] | None = None, dev_upto: float | None = None
) -> list[str]:
    """DE³ set up well, chosen fairly: the recipes tried and picked (tuned.json's `recipes`) with
    their tuning runs (`recipe_runs`) read on dev (area 1×–`dev_upto`), the runs still missing, and for each task with
    `de3-tuned` runs its full depth, calibrated and oracle readings and area beside `de3` on the
    same seeds, then `de3-tuned` minus each method, paired by seed. Nothing before `--tune-de3`
    and without `de3-tuned` runs."""
    tuned = tuned_file() or {}
    recipes = tuned.get("recipes", {}).get(DE3_TUNED)
    with_runs = [task for task in tasks if by_task[task].get(DE3_TUNED)]
    if recipes is None and not with_runs:
        return []
    lines = section(
        "DE³ set up well, chosen fairly",
        "DE³'s open choices (one joint stage or two, DAR's gradient into the backbone or not, DAR's weight α) tried "
        "as configurations under the same tuning budget as every method's learning rate (`run.py --tune-de3`); the "
        f"one picked runs on every task and seed as `{DE3_TUNED}`, beside the protocol's `de3` (the joint recipe). "
        "Nothing is chosen on dev.",
    )
    if recipes is not None:
        lines += recipes_lines(tuned, recipe_runs or {}, dev_upto)
    if recipes is None or not picks_protocol_de3(recipes):
        lines += [missing_runs_line(by_task), ""]
    if not with_runs:
        return lines
    lines += [
        f"Per task, `{DE3_TUNED}` beside the protocol's `de3` read on the seeds `{DE3_TUNED}` has, in the columns "
        "of the task's own table (its area over the same range; \"not reached\" where a run's frontier stops short "
        "of it).",
        "",
    ]
    for task in with_runs:
        runs = sorted(by_task[task][DE3_TUNED], key=lambda r: r.seed)
        seeds = [r.seed for r in runs]
        protocol = sorted((r for r in by_task[task].get("de3", []) if r.seed in seeds), key=lambda r: r.seed)
        upto = area_range(by_task[task])
        lines += [
            f"### {task} ({GLUE_TASKS[task].main_metric}; {seed_list(seeds)})",
            "",
            *method_rows_header(upto),
            method_row("de3", protocol, upto),
            method_row(DE3_TUNED, runs, upto),
            "",
        ]
    lines += [
        f"`{DE3_TUNED}`'s dev score minus each method's on the same seed (×100, mean ± std over the seeds both have), "
        f'and on how many of those seeds `{DE3_TUNED}` scored higher, as in "DE³ against each baseline": at full '
        "depth, then calibrated at each target, each method with its own exit rule.",
        "",
    ]
    for target in (None, *TARGETS):
        reading = "full depth" if target is None else f"{target}× speed-up, calibrated"
        lines += [
            f"### {DE3_TUNED} minus each method, {reading}",
            "",
            *minus_each_baseline(by_task, tasks, target, DE3_TUNED),
        ]
    return lines
