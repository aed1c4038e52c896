"""The per-task curves beside RESULTS.md (`curves_<task>.png`): every method's dev frontier and
where its calibrated thresholds land."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.glue_tradeoff.cells import TARGETS, plural
from benchmarks.glue_tradeoff.kept_runs import Run
from de3.data.tasks import GLUE_TASKS
from de3.sweep import frontier_score
from de3.utils.io import atomic_path


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
        label = f"{method} ({runs[0].rule}, {len(runs)} {plural(len(runs), 'seed')})"
        ax.plot(xs, means, color=colour, label=label, linestyle=("-", "--", "-.", ":")[index % 4])
        ax.fill_between(
            xs, [m - d for m, d in zip(means, stds)], [m + d for m, d in zip(means, stds)], color=colour, alpha=0.15
        )
        for target in TARGETS:  # calibrated: where the thresholds chosen on calibration land on dev
            readings = [r.calibrated_at(target) for r in runs]
            if all(readings):
                ax.plot(
                    statistics.fmean(v for _, v in readings),
                    100 * statistics.fmean(s for s, _ in readings),
                    "o",
                    color=colour,
                    markeredgecolor="black",
                )
    ax.set_xlabel("speed-up ratio on dev (L·N / Σ exit layers)")
    ax.set_ylabel(f"{metric} ×100")
    ax.set_title(
        f"{task}: oracle on dev (lines: Pareto frontier, mean ± std over seeds)\n"
        f"and calibrated (dots: thresholds chosen on calibration for {', '.join(f'{t}×' for t in TARGETS)})",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
