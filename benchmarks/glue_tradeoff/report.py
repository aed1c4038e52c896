"""RESULTS.md and the curves of the GLUE trade-off benchmark, from the runs' folders.

python -m benchmarks.glue_tradeoff.report [--out logs/glue_tradeoff]

Reads every finished run under `--out` (see `run.py` here), scores each method with its own
exit rule (regression tasks: patience, the only rule for them) at the target speed-ups, and
averages over seeds. Cells say how many seeds they hold; runs not finished yet are left out.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.glue_tradeoff.run import (  # noqa: E402
    BUDGET,
    DEFAULT_OUT,
    EPOCHS,
    METHODS,
    SEEDS,
    TASKS,
    TRAINED_AS,
    TWO_STAGE,
    applicable,
)
from benchmarks.per_exit_table import machine  # noqa: E402
from de3.data.tasks import GLUE_TASKS  # noqa: E402
from de3.exit_cache import load_exit_caches  # noqa: E402
from de3.sweep import frontier_score, sweep_split  # noqa: E402
from de3.utils.io import atomic_path, write_text_atomic  # noqa: E402

HERE = Path(__file__).resolve().parent
FINDINGS = HERE / "findings.md"  # the hand-written reading of the tables, placed above them
TARGETS = (1.5, 2.0, 3.0)
RULE_ORDER = ("edr", "dr", "entropy", "maxprob", "patience", "pcee", "dge")
LAMBDAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 16.0)  # EDR's λ: 0 is entropy alone, λ → ∞ is DR alone


@dataclass
class Run:
    """One finished (task, method, seed) run: its sweep points on the first eval split."""

    task: str
    method: str
    seed: int
    rule: str
    full_depth: float
    rows: list[dict]
    wall_time_s: float
    commit: str | None
    folder: Path

    def points(self, rule: str | None = None) -> list[tuple[float, float]]:
        metric = GLUE_TASKS[self.task].main_metric
        return [(r["speedup"], r[metric]) for r in self.rows if r["rule"] == (rule or self.rule)]

    def score_at(self, target: float, rule: str | None = None) -> float | None:
        return frontier_score(self.points(rule), target)[0]


def load_run(folder: Path, method: str) -> Run | None:
    """A finished run's folder (results.json and sweep.csv), or None while it is unfinished."""
    if not ((folder / "results.json").is_file() and (folder / "sweep.csv").is_file()):
        return None
    results = json.loads((folder / "results.json").read_text())
    spec = GLUE_TASKS[results["task"]]
    split = spec.eval_splits[0]
    with open(folder / "sweep.csv", newline="") as handle:
        rows = [
            {k: (v if k in ("split", "rule", "params") else float(v)) for k, v in row.items()}
            for row in csv.DictReader(handle)
            if row["split"] == split
        ]
    config = results["config"]
    return Run(
        task=spec.name,
        method=method,
        seed=int(config["seed"]),
        rule="patience" if spec.is_regression else config["exit"]["rule"],
        full_depth=results["scores"][split][spec.main_metric][-1],
        rows=rows,
        wall_time_s=results["wall_time_s"],
        commit=results.get("git_commit"),
        folder=folder,
    )


def load_runs(out: Path) -> list[Run]:
    """The main benchmark's finished runs, `<out>/<task>/<method>/seed<s>/`."""
    folders = sorted(p.parent for p in out.glob("*/*/seed*/results.json"))
    return [run for folder in folders if (run := load_run(folder, folder.parent.name)) is not None]


def load_sensitivity(out: Path) -> dict[str, dict[str, list[Run]]]:
    """task → variant ("loss.alpha=0.3") → finished runs, from `<out>/sensitivity/`."""
    found: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for results_path in sorted((out / "sensitivity").glob("*/*/seed*/results.json")):
        folder = results_path.parent
        if (run := load_run(folder, "de3")) is not None:
            found[run.task][folder.parent.name].append(run)
    return found


def section(title: str, *text: str) -> list[str]:
    """A `##` heading and its explanatory lines, as markdown lines."""
    return [f"## {title}", "", *text, ""]


def table_header(*columns: str, names: int = 1) -> list[str]:
    """A markdown header: the first `names` columns left-aligned, the rest right-aligned (numbers)."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * names + "---:|" * (len(columns) - names)]


def mean_std(values: list[float]) -> str:
    """×100, "mean ± std (n)"; std over seeds (n − 1 in the denominator)."""
    if not values:
        return "—"
    mean = 100 * statistics.fmean(values)
    spread = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{mean:.1f}{spread} ({len(values)})"


def cell(runs: list[Run], target: float | None, rule: str | None = None) -> tuple[str, float | None]:
    """A table cell over seeds, and its mean (None when some seed never reaches the target)."""
    values = [r.full_depth if target is None else r.score_at(target, rule) for r in runs]
    if not values or any(v is None for v in values):
        return ("not reached" if values else "—"), None
    return mean_std(values), statistics.fmean(values)


def plot_task(task: str, by_method: dict[str, list[Run]], path: Path) -> None:
    """All methods on one chart: the seed-mean of each run's frontier, with a ±std band."""
    fig, ax = plt.subplots(figsize=(7, 5))
    metric = GLUE_TASKS[task].main_metric
    grid = [1.0 + 0.05 * i for i in range(101)]  # 1× to 6×
    for index, (method, runs) in enumerate(by_method.items()):
        curves = [[frontier_score(r.points(), s)[0] for s in grid] for r in runs]
        xs, means, stds = [], [], []
        for i, s in enumerate(grid):
            values = [c[i] for c in curves]
            if all(v is not None for v in values):
                xs.append(s)
                means.append(100 * statistics.fmean(values))
                stds.append(100 * statistics.stdev(values) if len(values) > 1 else 0.0)
        if not xs:
            continue
        colour = plt.get_cmap("tab10")(index)
        label = f"{method} ({runs[0].rule}, {len(runs)} seeds)"
        ax.plot(xs, means, color=colour, label=label, linestyle=("-", "--", "-.", ":")[index % 4])
        ax.fill_between(
            xs, [m - d for m, d in zip(means, stds)], [m + d for m, d in zip(means, stds)], color=colour, alpha=0.15
        )
    ax.set_xlabel("speed-up ratio (L·N / Σ exit layers)")
    ax.set_ylabel(f"{metric} ×100 (Pareto frontier, interpolated)")
    ax.set_title(f"{task}: each method with its own exit rule (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def report(runs: list[Run], sensitivity: dict[str, dict[str, list[Run]]], command: str, figures: Path) -> str:
    """RESULTS.md's text; the per-task curves are written into `figures` (beside RESULTS.md)."""
    by_task: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_task[run.task][run.method].append(run)
    tasks = [t for t in TASKS if t in by_task]
    commits = sorted({r.commit or "unknown" for r in runs})
    planned = sum(applicable(t, m) for t in TASKS for m in METHODS) * len(SEEDS)
    lines = [
        "# Speed–accuracy trade-off of every method on GLUE (MiniLM, CPU)",
        "",
        f"- Command: `{command}`, then `python -m benchmarks.glue_tradeoff.report`",
        f"- Machine: {machine()}",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Runs: {len(runs)} of {planned} finished; total wall time {sum(r.wall_time_s for r in runs) / 3600:.1f} h "
        "(training + evaluation + sweep, per run)",
        f"- Code: git {', '.join(c[:12] for c in commits)}",
        f"- Budget (every run): `{' '.join(BUDGET)} trainer.max_epochs={EPOCHS}`: a seeded 1,000-example "
        "slice of each training set, so scores sit below full-data numbers; dev splits are complete. "
        f"{' and '.join(TWO_STAGE)} train {2 * EPOCHS} epochs: stage 1 fine-tunes backbone + final exit for "
        f"the same {EPOCHS} epochs as everyone, stage 2 trains the internal exits for {EPOCHS} more with the "
        "backbone frozen (their papers' protocol).",
        "- Scores ×100 on the dev split, mean ± std over seeds (n seeds in brackets). At a target "
        "speed-up: the rule's Pareto frontier read at the target, interpolated linearly between the two "
        "Pareto points around it (`de3.sweep.frontier_score`; the curves use the same reading), each method "
        'with its own exit rule. "not reached": some seed\'s rule never got that fast.',
        "- STS-B is regression: every method there exits by PABEE's regression patience (the only rule "
        "defined without classes), so its methods differ in training only; DE³ needs classes (n/a).",
        f"- {', '.join(f'{a} trains exactly as {b}' for a, b in TRAINED_AS.items())} (same scheme and seed, so "
        "the same weights): runs made after this was noticed sweep that checkpoint with their own rule "
        "instead of training it again.",
        "",
    ]
    if FINDINGS.is_file():
        lines += [FINDINGS.read_text().strip(), ""]
    for target in TARGETS:
        lines += _main_table(by_task, tasks, target)
    for task in tasks:
        spec = GLUE_TASKS[task]
        lines += [
            f"## {task} ({spec.main_metric})",
            "",
            f"![{task}](curves_{task}.png)",
            "",
            *table_header("method", "rule", "full depth", *(f"{t}×" for t in TARGETS), names=2),
        ]
        for method in METHODS:
            method_runs = by_task[task].get(method, [])
            if not applicable(task, method):
                lines.append(
                    f"| {method} | — | n/a: prototypes need classes | " + " | ".join("—" for _ in TARGETS) + " |"
                )
                continue
            rule = method_runs[0].rule if method_runs else "—"
            cells = [cell(method_runs, None)[0]] + [cell(method_runs, t)[0] for t in TARGETS]
            lines.append(f"| {method} | {rule} | " + " | ".join(cells) + " |")
        lines.append("")
        plot_task(task, by_task[task], figures / f"curves_{task}.png")
    lines += _paired_against_de3(by_task, tasks)
    lines += _rule_effect(by_task, tasks)
    lines += _lambda_sensitivity(by_task, tasks)
    lines += _sensitivity(by_task, sensitivity)
    return "\n".join(lines)


def _main_table(by_task, tasks: list[str], target: float) -> list[str]:
    """Methods × tasks at one speed-up, with the average over the classification tasks."""
    classification = [t for t in tasks if not GLUE_TASKS[t].is_regression]
    lines = [
        f"## All methods at {target}× speed-up",
        "",
        *table_header("method", *(f"{t} ({GLUE_TASKS[t].main_metric})" for t in tasks), "average (classification)"),
    ]
    for method in METHODS:
        cells, means = [], []
        for task in tasks:
            text, mean = cell(by_task[task].get(method, []), target) if applicable(task, method) else ("n/a", None)
            cells.append(text)
            if task in classification:
                means.append(mean)
        average = f"{100 * statistics.fmean(means):.1f}" if means and all(m is not None for m in means) else "—"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {average} |")
    return lines + [""]


def _paired_against_de3(by_task, tasks: list[str]) -> list[str]:
    """de3 minus each baseline, seed by seed (same seed = same training slice and order)."""
    lines = section(
        "DE³ against each baseline, seed by seed",
        "de3's score minus the baseline's on the same seed (×100, mean ± std over the seeds both have), "
        "and on how many of those seeds de3 scored higher; each method with its own exit rule.",
    )
    classification = [t for t in tasks if not GLUE_TASKS[t].is_regression and by_task[t].get("de3")]
    for target in TARGETS:
        by_seed = {  # (task, method) → seed → score at this target, each computed once
            (task, method): {r.seed: r.score_at(target) for r in runs}
            for task in classification
            for method, runs in by_task[task].items()
        }
        lines += [f"### {target}× speed-up", "", *table_header("baseline", *classification)]
        for method in (m for m in METHODS if m != "de3"):
            cells = []
            for task in classification:
                ours, theirs = by_seed[task, "de3"], by_seed.get((task, method), {})
                pairs = [(ours[s], theirs[s]) for s in sorted(ours.keys() & theirs.keys())]
                if not pairs or any(None in pair for pair in pairs):
                    cells.append("not reached" if pairs else "—")
                    continue
                gaps = [100 * (a - b) for a, b in pairs]
                spread = f" ± {statistics.stdev(gaps):.1f}" if len(gaps) > 1 else ""
                wins = sum(g > 0 for g in gaps)
                cells.append(f"{statistics.fmean(gaps):+.1f}{spread} ({wins}/{len(gaps)})")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _rule_effect(by_task, tasks: list[str]) -> list[str]:
    """Every rule on the same de3-trained runs: the rule's effect apart from training's."""
    lines = section(
        "Rule effect: every exit rule on the same `experiment=de3` runs",
        "Same checkpoints, so differences here come from the exit rule alone.",
    )
    for task in tasks:
        runs = by_task[task].get("de3", [])
        if not runs:
            continue
        rules = [r for r in RULE_ORDER if any(row["rule"] == r for row in runs[0].rows)]
        lines += [
            f"### {task}",
            "",
            *table_header("rule", *(f"{t}×" for t in TARGETS)),
        ]
        for rule in rules:
            lines.append(f"| {rule} | " + " | ".join(cell(runs, t, rule)[0] for t in TARGETS) + " |")
        lines.append("")
    return lines


def _lambda_sensitivity(by_task, tasks: list[str]) -> list[str]:
    """EDR's λ re-simulated from the de3 runs' exit caches (no retraining: λ only enters the rule)."""
    lines = section(
        "EDR's λ, re-simulated from the `experiment=de3` runs' exit caches",
        "EDR = (λ + 1) / (λ/DR + 1/Entropy): λ = 0 is entropy alone, large λ approaches DR alone.",
    )
    for task in tasks:
        runs = [r for r in by_task[task].get("de3", []) if (r.folder / "exit_cache.pt").is_file()]
        if not runs:
            continue
        spec = GLUE_TASKS[task]
        split = spec.eval_splits[0]
        lines += [
            f"### {task}",
            "",
            *table_header("λ", *(f"{t}×" for t in TARGETS)),
        ]
        caches = [load_exit_caches(r.folder / "exit_cache.pt")[split] for r in runs]
        for lam in LAMBDAS:
            scores = {t: [] for t in TARGETS}
            for cache in caches:
                rows = sweep_split(split, cache, spec, {"edr": {"lam": lam}}, flops=None)
                points = [(r["speedup"], r[spec.main_metric]) for r in rows]
                for t in TARGETS:
                    scores[t].append(frontier_score(points, t)[0])
            cells = ["not reached" if None in v else mean_std(v) for v in scores.values()]
            lines.append(f"| {lam:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _sensitivity(by_task, sensitivity: dict[str, dict[str, list[Run]]]) -> list[str]:
    """DE³'s α, τ, γ one at a time (sensitivity.py), beside the defaults' runs."""
    if not sensitivity:
        return []
    lines = [
        "## DE³ training hyperparameters, one at a time",
        "",
        "Defaults α = 1, τ = 1, γ = 0.1 (the main de3 runs of the same seeds); EDR and, for",
        "comparison on the same checkpoints, entropy.",
        "",
    ]
    for task, variants in sensitivity.items():
        seeds = {r.seed for runs in variants.values() for r in runs}
        default = [r for r in by_task[task].get("de3", []) if r.seed in seeds]
        lines += [
            f"### {task}",
            "",
            *table_header("variant", "full depth", *(f"EDR {t}×" for t in TARGETS), "entropy 2.0×"),
        ]
        for name, runs in [("defaults", default), *sorted(variants.items())]:
            cells = [cell(runs, None)[0], *(cell(runs, t)[0] for t in TARGETS), cell(runs, 2.0, "entropy")[0]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the runs' folders (run.py --out)")
    parser.add_argument("--command", default="python -m benchmarks.glue_tradeoff.run", help="what produced the runs")
    args = parser.parse_args()
    runs = load_runs(args.out)
    if not runs:
        raise SystemExit(f"no finished runs under {args.out}: run python -m benchmarks.glue_tradeoff.run first")
    write_text_atomic(HERE / "RESULTS.md", report(runs, load_sensitivity(args.out), args.command, HERE))
    print(f"wrote {HERE / 'RESULTS.md'} from {len(runs)} runs")


if __name__ == "__main__":
    main()
