"""The markdown RESULTS.md's tables are made of: headings, headers, and the cells that read a
method's runs (one per seed) at a target speed-up."""

from __future__ import annotations

import statistics

from benchmarks.glue_tradeoff.kept_runs import Run
from de3.sweep import frontier_area, frontier_score

TARGETS = (1.5, 2.0, 3.0)  # the speed-ups fixed before the runs
INTERPOLATED = "*"


def section(title: str, *text: str) -> list[str]:
    """A `##` heading and its explanatory lines, as markdown lines."""
    return [f"## {title}", "", *text, ""]


def plural(count: int, noun: str) -> str:
    """`noun`, with an s unless `count` is 1."""
    return noun if count == 1 else f"{noun}s"


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
    """An oracle (or, with `target` None, full-depth) cell over seeds, and its mean (None when
    some seed never reaches the target)."""
    readings = [(r.full_depth, False) if target is None else frontier_score(r.points(rule), target) for r in runs]
    values = [value for value, _ in readings]
    if not values or any(v is None for v in values):
        return ("not reached" if values else "—"), None
    interpolated = any(flag for _, flag in readings)
    return mean_std(values) + (INTERPOLATED if interpolated else ""), statistics.fmean(values)


def calibrated_cell(readings: list[tuple[float, float] | None]) -> tuple[str, float | None]:
    """A calibrated cell over seeds: dev score as `mean_std`, then the mean dev speed-up reached
    (range over seeds); "not reached" when some seed's threshold never got that fast."""
    if not readings or any(r is None for r in readings):
        return ("not reached" if readings else "—"), None
    scores, speedups = [s for s, _ in readings], [v for _, v in readings]
    spread = f", {min(speedups):.2f}–{max(speedups):.2f}" if len(speedups) > 1 else ""
    return f"{mean_std(scores)} @ {statistics.fmean(speedups):.2f}×{spread}", statistics.fmean(scores)


def calibrated(runs: list[Run], target: float, rule: str | None = None) -> tuple[str, float | None]:
    """The calibrated cell of `runs` at `target`, read with their own exit rule or `rule`."""
    return calibrated_cell([r.calibrated_at(target, rule) for r in runs])


def area_cell(runs: list[Run], upto: float) -> str:
    """The mean score under each run's dev Pareto frontier over 1×–`upto`, over seeds ("—"
    without runs or without a common range, when some run never exits early; "not reached" when
    some run's frontier stops short of `upto`, which another table's runs set)."""
    if not runs or upto <= 1.0:
        return "—"
    if any(r.score_at(upto) is None for r in runs):
        return "not reached"
    return mean_std([frontier_area(r.points(), upto) for r in runs])
