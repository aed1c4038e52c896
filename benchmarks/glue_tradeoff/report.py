"""RESULTS.md and the curves of the GLUE trade-off benchmark, from the runs' kept outputs.

python -m benchmarks.glue_tradeoff.report [--runs benchmarks/glue_tradeoff/runs]

Reads every finished run's text outputs (`results.json`, `sweep.csv`, `edr_lambda.csv`; see
`run.py` here) and scores each method with its own exit rule (regression tasks: patience, the
only rule for them) at the target speed-ups, two ways: *calibrated* (the headline: the
threshold chosen on the calibration split, scored once on dev, with the speed-up it reached
there) and *oracle on dev* (dev's own Pareto frontier read at the target, as papers report).
Cells average over seeds and say how many they hold; runs not finished yet are left out.
Beside them: the area under each dev frontier over the speed-ups every run of a task reaches,
each method's retention of its own full depth, the calibrated readings past the fixed targets (4×
and 5×, exploratory: chosen after reading the curves), and, per task, the best constant answer's dev
score (from the GLUE dev file, `--data-dir`), with the task marked at chance when every method's
full depth stays within 3 points of it. The chosen DE³ (`de3-tuned`: `run.py --tune-de3`'s pick,
run with `--methods de3-tuned`) has a section of its own beside the protocol's `de3`, which names
its runs still missing, its own rule-effect and λ tables, and a row in the tables of all methods.

This module puts RESULTS.md together; each part is made beside it: `kept_runs` (the runs read
back), `cells` (a cell's reading, the markdown), `header`, `tables`, `paired` (one method minus
another, seed by seed), `tuning`, `ablations`, `chance`, `findings` (the reading above the
tables, and its check), `de3_tuned` (the chosen DE³ beside the protocol's), `curves` (the PNGs) and
`readme` (README's copy of two tables).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from benchmarks.glue_tradeoff.ablations import ablations_section, lambda_section, rule_effect_section
from benchmarks.glue_tradeoff.cells import TARGETS
from benchmarks.glue_tradeoff.chance import DEFAULT_GLUE_DIR
from benchmarks.glue_tradeoff.curves import plot_task
from benchmarks.glue_tradeoff.de3_tuned import de3_tuned_section
from benchmarks.glue_tradeoff.findings import findings_lines, stale_findings
from benchmarks.glue_tradeoff.header import header
from benchmarks.glue_tradeoff.kept_runs import ByTask, Run, load_recipe_tuning, load_runs, load_sensitivity, load_tuning
from benchmarks.glue_tradeoff.paired import (
    compute_matched_section,
    paired_against_de3_section,
    past_the_targets_section,
)
from benchmarks.glue_tradeoff.readme import README, readme_with_tables
from benchmarks.glue_tradeoff.run import DE3_TUNED, KEPT_RUNS, TASKS
from benchmarks.glue_tradeoff.tables import (
    full_depth_by_seed_section,
    main_tables,
    per_exit_section,
    retention_section,
    task_table,
)
from benchmarks.glue_tradeoff.tuning import dev_range, tuning_section
from de3.utils.io import write_text_atomic

HERE = Path(__file__).resolve().parent


def report(
    runs: list[Run],
    sensitivity: dict[str, dict[str, list[Run]]],
    command: str,
    figures: Path,
    data_dir: Path = DEFAULT_GLUE_DIR,
    tuning: dict[tuple[str, str], Run] | None = None,
    recipe_tuning: dict[str, Run] | None = None,
) -> str:
    """RESULTS.md's text; the per-task curves are written into `figures` (beside RESULTS.md)."""
    by_task: ByTask = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_task[run.task][run.method].append(run)
    tasks = [t for t in TASKS if t in by_task]
    lines = [*header(runs, tasks, command), *findings_lines()]
    for target in TARGETS:
        lines += main_tables(by_task, tasks, target)
    for task in tasks:
        lines += task_table(task, by_task[task], data_dir)
        plot_task(task, by_task[task], figures / f"curves_{task}.png")
    lines += tuning_section(tuning or {})
    lines += de3_tuned_section(by_task, tasks, recipe_tuning, dev_range(tuning or {}))
    lines += compute_matched_section(by_task, tasks)
    lines += paired_against_de3_section(by_task, tasks)
    lines += past_the_targets_section(by_task, tasks)
    lines += retention_section(by_task, tasks)
    lines += full_depth_by_seed_section(by_task, tasks)
    lines += per_exit_section(by_task, tasks)
    lines += rule_effect_section(by_task, tasks)
    lines += rule_effect_section(by_task, tasks, DE3_TUNED, DE3_TUNED, ("edr", "entropy"))
    lines += lambda_section(by_task, tasks)
    lines += lambda_section(by_task, tasks, DE3_TUNED, DE3_TUNED)
    lines += ablations_section(by_task, sensitivity)
    return "\n".join(lines)


def main() -> None:
    """RESULTS.md, its curves and README's copy of the headline tables, from the runs under `--runs`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=KEPT_RUNS, help="the runs' kept outputs (run.py --kept)")
    parser.add_argument("--command", default="python -m benchmarks.glue_tradeoff.run", help="what produced the runs")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_GLUE_DIR, help="GLUE files (dev labels: chance)")
    args = parser.parse_args()
    runs = load_runs(args.runs)
    if not runs:
        raise SystemExit(f"no finished runs under {args.runs}: run python -m benchmarks.glue_tradeoff.run first")
    results = report(
        runs,
        load_sensitivity(args.runs),
        args.command,
        HERE,
        args.data_dir,
        load_tuning(args.runs),
        load_recipe_tuning(args.runs),
    )
    write_text_atomic(HERE / "RESULTS.md", results)
    write_text_atomic(README, readme_with_tables(README.read_text(), results))
    print(f"wrote {HERE / 'RESULTS.md'} from {len(runs)} runs, and its headline tables into {README}")
    if note := stale_findings(results):
        print(note)


if __name__ == "__main__":
    main()
