"""RESULTS.md's tables of every method: across tasks at each target, per task, and the readings
of each method against its own full depth, seed by seed and exit by exit."""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.glue_tradeoff.cells import TARGETS, area_cell, calibrated, cell, mean_std, section, table_header
from benchmarks.glue_tradeoff.chance import chance_note
from benchmarks.glue_tradeoff.kept_runs import ByTask, Run
from benchmarks.glue_tradeoff.run import DE3_TUNED, METHODS, applicable
from de3.data.tasks import GLUE_TASKS


def main_tables(by_task: ByTask, tasks: list[str], target: float) -> list[str]:
    """Methods × tasks at one speed-up, calibrated and oracle, with the average over the
    classification tasks."""
    lines = []
    for kind, reading in (("calibrated", calibrated), ("oracle on dev", cell)):
        lines += [
            f"## All methods at {target}× speed-up, {kind}",
            "",
            *methods_by_task(by_task, tasks, target, reading),
        ]
    return lines


def methods_by_task(by_task: ByTask, tasks: list[str], target: float, reading) -> list[str]:
    """One table: each method's `reading` (`calibrated` or `cell`) at `target` on every task, and
    its average over the classification tasks ("—" unless every one of them has a number)."""
    classification = [t for t in tasks if not GLUE_TASKS[t].is_regression]
    lines = table_header("method", *(f"{t} ({GLUE_TASKS[t].main_metric})" for t in tasks), "average (classification)")
    for method in with_chosen_de3(by_task, tasks):
        cells, means = [], []
        for task in tasks:
            runs = by_task[task].get(method, [])
            text, mean = reading(runs, target) if applicable(task, method) else ("n/a", None)
            cells.append(text)
            if task in classification:
                means.append(mean)
        average = f"{100 * statistics.fmean(means):.1f}" if means and all(m is not None for m in means) else "—"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {average} |")
    return [*lines, ""]


def with_chosen_de3(by_task: ByTask, tasks: list[str]) -> list[str]:
    """The protocol's methods, and `de3-tuned` right after `de3` once it has runs (its cells say
    how many seeds they hold; its own section names the missing ones)."""
    if not any(by_task[task].get(DE3_TUNED) for task in tasks):
        return list(METHODS)
    at = METHODS.index("de3") + 1
    return [*METHODS[:at], DE3_TUNED, *METHODS[at:]]


def task_table(task: str, by_method: dict[str, list[Run]], data_dir: Path) -> list[str]:
    """A task's section: the constant answer (`chance_note`, GLUE files at `data_dir`), its curves,
    and each method's full depth, calibrated and oracle readings and area over the speed-ups all
    of them reach."""
    upto = area_range(by_method)
    lines = [
        f"## {task} ({GLUE_TASKS[task].main_metric})",
        "",
        *chance_note(task, {m: by_method.get(m, []) for m in METHODS}, data_dir),
        f"![{task}](curves_{task}.png)",
        "",
        *method_rows_header(upto),
    ]
    for method in METHODS:
        if not applicable(task, method):
            lines.append(
                f"| {method} | — | n/a: prototypes need classes | " + " | ".join("—" for _ in TARGETS * 2) + " | — |"
            )
            continue
        lines.append(method_row(method, by_method.get(method, []), upto))
    return [*lines, ""]


def area_range(by_method: dict[str, list[Run]]) -> float:
    """The fastest speed-up every run of a task's protocol methods (`METHODS`) reaches on dev: the
    range of the areas in its table (1.0 when some run never exits early)."""
    return min((r.fastest() for m in METHODS for r in by_method.get(m, [])), default=1.0)


def method_rows_header(upto: float) -> list[str]:
    """The header of a task's table (`method_row`), its areas over 1×–`upto`."""
    return table_header(
        "method",
        "rule",
        "full depth",
        *(f"{t}× {kind}" for t in TARGETS for kind in ("calibrated", "oracle")),
        f"area 1–{upto:.2f}× (oracle)" if upto > 1.0 else "area (some run never exits early)",
        names=2,
    )


def method_row(method: str, runs: list[Run], upto: float) -> str:
    """`method`'s row of a task's table: its rule, full depth, calibrated and oracle readings at
    every target, and the area under its dev frontier over 1×–`upto`."""
    rule = runs[0].rule if runs else "—"
    cells = [cell(runs, None)[0]]
    cells += [c for t in TARGETS for c in (calibrated(runs, t)[0], cell(runs, t)[0])]
    cells.append(area_cell(runs, upto))
    return f"| {method} | {rule} | " + " | ".join(cells) + " |"


def retention_section(by_task: ByTask, tasks: list[str]) -> list[str]:
    """Each method's calibrated dev score as a percentage of its own full-depth dev score, seed by seed."""
    lines = section(
        "Retention: calibrated score as a share of the method's own full depth",
        "Per seed, the calibrated dev score at the target divided by the same run's full-depth dev score "
        "(%, mean ± std over seeds): how much of its own quality each method keeps, apart from how good "
        "its full depth is.",
    )
    for target in TARGETS:
        lines += [f"### {target}× speed-up", "", *table_header("method", *tasks)]
        for method in with_chosen_de3(by_task, tasks):
            cells = []
            for task in tasks:
                runs = by_task[task].get(method, [])
                readings = [(r.calibrated_at(target) or (None,))[0] for r in runs]
                if not runs or None in readings or any(r.full_depth <= 0 for r in runs):
                    cells.append("not reached" if runs and None in readings else "—")
                    continue
                cells.append(mean_std([v / r.full_depth for v, r in zip(readings, runs)]).replace(" (", "% ("))
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def full_depth_by_seed_section(by_task: ByTask, tasks: list[str]) -> list[str]:
    """Each run's full-depth dev score, one column per seed: the spread behind the means, and
    which seed a collapse or an outlier comes from."""
    lines = section(
        "Full depth, seed by seed",
        "The final exit's dev score of each run (×100; the means in the task tables average these).",
    )
    for task in tasks:
        seeds = sorted({r.seed for runs in by_task[task].values() for r in runs})
        lines += [f"### {task} ({GLUE_TASKS[task].main_metric})", "", *table_header("method", *map(str, seeds))]
        for method in (m for m in with_chosen_de3(by_task, tasks) if by_task[task].get(m)):
            by_seed = {r.seed: f"{100 * r.full_depth:.1f}" for r in by_task[task][method]}
            lines.append(f"| {method} | " + " | ".join(by_seed.get(seed, "—") for seed in seeds) + " |")
        lines.append("")
    return lines


def per_exit_section(by_task: ByTask, tasks: list[str]) -> list[str]:
    """Every exit's dev score, as each method trained it (no early exit: all examples at that exit)."""
    lines = section(
        "Per-exit dev scores",
        "Each exit scored on all of dev (×100, mean ± std over seeds): what each training scheme makes "
        "of the internal layers. Methods that sweep another's checkpoint show that checkpoint's exits.",
    )
    for task in tasks:
        found = [(m, runs) for m in with_chosen_de3(by_task, tasks) if (runs := by_task[task].get(m))]
        if not found:
            continue
        layers = len(found[0][1][0].per_exit)
        lines += [f"### {task} ({GLUE_TASKS[task].main_metric})", ""]
        lines += table_header("method", *(f"exit {i + 1}" for i in range(layers)))
        for method, runs in found:
            cells = [mean_std([r.per_exit[i] for r in runs]) for i in range(layers)]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
