"""RESULTS.md's head: how the runs were made (command, machine, code, budget) and how to read the tables."""

from __future__ import annotations

import datetime

from benchmarks.glue_tradeoff.cells import INTERPOLATED
from benchmarks.glue_tradeoff.de3_tuned import planned_seeds
from benchmarks.glue_tradeoff.kept_runs import Run
from benchmarks.glue_tradeoff.run import (
    DE3_TUNED,
    EPOCHS,
    MATCHED_METHODS,
    MATCHED_TASKS,
    METHODS,
    SEEDS,
    TASKS,
    TRAINED_AS,
    TWO_STAGE,
    applicable,
    budget,
    git,
    seeds_of,
)
from benchmarks.per_exit_table import machine

DIRTY = "-dirty"  # de3.utils.provenance.git_commit's mark of uncommitted changes
TRAINING_CODE = ("de3", "conf", "run.py")  # what a run's numbers depend on, apart from its command


def header(runs: list[Run], tasks: list[str], command: str) -> list[str]:
    """The title and the lines under it, for `runs` of `tasks` made by `command`."""
    commits = sorted({r.commit or "unknown" for r in runs})
    chosen_on = sorted({r.chosen_on for r in runs})
    planned = sum(applicable(t, m) * len(seeds_of(t, SEEDS)) for t in TASKS for m in METHODS)
    matched = sum(len(MATCHED_METHODS) * len(seeds_of(t, SEEDS)) for t in MATCHED_TASKS)
    # the chosen DE³'s runs counted once there are any (none when --tune-de3 picked the protocol's de3)
    chosen = sum(map(len, planned_seeds(DE3_TUNED).values())) if any(r.method == DE3_TUNED for r in runs) else 0
    return [
        "# Speed–accuracy trade-off of every method on GLUE (MiniLM, CPU)",
        "",
        f"- Command: `{command}`, then `python -m benchmarks.glue_tradeoff.report`",
        f"- Machine: {machine()}",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Runs: {len(runs)} of {planned + matched + chosen} finished ({planned} main, {matched} compute-matched"
        + (f", {chosen} {DE3_TUNED}" if chosen else "")
        + "); "
        f"total wall time {sum(r.wall_time_s for r in runs) / 3600:.1f} h "
        "(training + evaluation + sweep, per run); their text outputs are in `runs/`",
        f"- Code: {code_line(commits)}",
        *(f"- Budget ({task}): `{' '.join(budget(task))} trainer.max_epochs={EPOCHS}`" for task in tasks),
        f"- {' and '.join(TWO_STAGE)} train {2 * EPOCHS} epochs: stage 1 fine-tunes backbone + final exit for "
        f"the same {EPOCHS} epochs as everyone, stage 2 trains the internal exits for {EPOCHS} more with the "
        "backbone frozen (their papers' protocol).",
        f"- Checkpoints and thresholds chosen on: {', '.join(chosen_on)}. **Calibrated** (the headline): the "
        "threshold that reached the target on that split, scored once on dev, with the speed-up it reached on "
        "dev (mean, then the range over seeds). **Oracle on dev** (what papers report): dev's own Pareto "
        "frontier read at the target, interpolated linearly between the two Pareto points around it "
        "(`de3.sweep.frontier_score`; the lines of the curves). Scores ×100, mean ± std over seeds (n seeds in "
        'brackets), each method with its own exit rule. "not reached": some seed\'s rule never got that fast; '
        f"{INTERPOLATED}: interpolated in at least one seed (no sweep point at the target).",
        "- Area: the mean score under the dev Pareto frontier over a speed-up range every run of the task "
        "reaches (`de3.sweep.frontier_area`): a reading of the whole curve that does not depend on where a "
        "coarse threshold grid happens to put its points.",
        "- STS-B is regression: every method there exits by PABEE's regression patience (the only rule "
        "defined without classes), so its methods differ in training only; DE³ needs classes (n/a).",
        f"- {', '.join(f'{a} trains exactly as {b}' for a, b in TRAINED_AS.items())} (same scheme and seed, so "
        "the same weights): its runs sweep that checkpoint with their own rule instead of training it again.",
        "",
    ]


def code_line(commits: list[str], listed: int = 3) -> str:
    """The commits the runs were made at, oldest first (all of them up to `listed`, else the
    oldest and newest and how many), and whether the training code (`TRAINING_CODE`) is the
    same at all of them and some runs had uncommitted changes (a "-dirty" commit, see `git_commit`)."""
    dirty = sum(c.endswith(DIRTY) for c in commits)
    known = sorted(
        {c.removesuffix(DIRTY) for c in commits if c != "unknown"},
        key=lambda c: int(git("rev-list", "--count", c).stdout.strip() or 0),  # oldest (fewest ancestors) first
    )
    named = sorted(commits, key=lambda c: known.index(c.removesuffix(DIRTY)) if c != "unknown" else len(known))
    if len(named) > listed:
        named = [f"{len(named)} commits from {known[0][:12]} to {known[-1][:12]}, each run's in its results.json"]
    else:
        named = [c[:12] + DIRTY * c.endswith(DIRTY) for c in named]
    notes = []
    if len(known) > 1:
        changed = [c[:12] for c in known[1:] if git("diff", "--quiet", known[0], c, "--", *TRAINING_CODE).returncode]
        notes.append(
            f"{', '.join(TRAINING_CODE)} differ from {known[0][:12]} at {', '.join(changed)}; `git diff` them"
            if changed
            else f"{', '.join(TRAINING_CODE)} identical at all of them: only the benchmark's own files changed"
        )
    if dirty:
        notes.append(
            f"{dirty} of the commits {DIRTY}: tracked files had uncommitted changes when a run started; "
            "no commit records them"
        )
    return f"git {', '.join(named)}" + (f" ({'; '.join(notes)})" if notes else "")
