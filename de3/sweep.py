"""The speed–accuracy sweep: every exit rule at many thresholds, simulated on an `ExitCache`.

No model is run here: one cached pass gives every layer's logits (and prototype distances),
and each (rule, threshold) point is computed from them with the rule functions that real
early-exit inference uses.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from de3.data.tasks import TaskSpec  # noqa: E402
from de3.exit_cache import ExitCache  # noqa: E402
from de3.flops import FlopsModel, layer_speedup  # noqa: E402
from de3.metrics import make_metric, predictions  # noqa: E402
from de3.models.exit_rules import RULES, ExitRule, decide, rule_indicator  # noqa: E402
from de3.utils.io import atomic_path  # noqa: E402

log = logging.getLogger(__name__)
Row = dict[str, Any]
# distinct per rule, so that coinciding curves (entropy and maxprob when C = 2) stay visible
MARKERS, LINES = "os^Dvx*P", ("-", "--", "-.", ":")


def threshold_grid(
    rule: ExitRule, indicator: torch.Tensor, num_thresholds: int, extra: Sequence[float] = ()
) -> list[float]:
    """Thresholds spanning "nobody exits early" to "everyone exits as early as the rule allows":
    quantiles of the rule's finite indicator values plus just above the largest; for counting
    rules (patience) every count 1..L−1. `extra` thresholds are added as given."""
    if rule.counts:
        grid = [float(t) for t in range(1, indicator.shape[0] + 1)]
    else:
        finite = indicator[torch.isfinite(indicator)]
        if finite.numel() == 0:
            grid = []
        else:
            sample = finite[:: finite.numel() // 1_000_000 + 1]  # torch.quantile's input limit
            quantiles = torch.quantile(sample.double(), torch.linspace(0, 1, num_thresholds, dtype=torch.float64))
            above = torch.nextafter(finite.max(), torch.tensor(math.inf, dtype=finite.dtype))
            # in the indicator's own precision, so that a threshold means exactly what it did here
            grid = quantiles.to(finite.dtype).tolist() + [above.item()]
    return sorted(set(grid) | {float(t) for t in extra})


def score(task: TaskSpec, predicted: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The task's metrics for one set of predictions."""
    return {name: float(make_metric(name, task.num_outputs)(predicted, labels)) for name in task.metrics}


def applicable_rules(
    task: TaskSpec, cache: ExitCache, rules: Mapping[str, Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    """The configured rules (name → params) that this task and cache support."""
    return {
        name: params
        for name, params in rules.items()
        if RULES[name].supports(task.is_regression, cache.distances is not None)
    }


def sweep_split(
    split: str,
    cache: ExitCache,
    task: TaskSpec,
    rules: Mapping[str, Mapping[str, Any]],
    flops: FlopsModel | None,
    num_thresholds: int = 60,
    extra_thresholds: Mapping[str, Sequence[float]] | None = None,
) -> list[Row]:
    """One row per (rule, threshold) on one split: speed-up ratio, mean exit layer, FLOPs
    speed-up (NaN without `flops`, e.g. when re-simulating from a saved cache alone) and the
    task's metrics."""
    rows = []
    for name, params in applicable_rules(task, cache, rules).items():
        rule = RULES[name]
        indicator = rule_indicator(rule, cache.logits, cache.distances, params)
        grid = threshold_grid(rule, indicator, num_thresholds, (extra_thresholds or {}).get(name, ()))
        if not grid:
            log.warning(
                "rule %s (%s) cannot exit before the last of %d layers here: left out of the sweep",
                name,
                json.dumps(dict(params)),
                cache.num_layers,
            )
        for threshold in grid:
            layers, answers = decide(rule, cache.logits, indicator, threshold, task.is_regression)
            rows.append(
                {
                    "split": split,
                    "rule": name,
                    "params": json.dumps(dict(params), sort_keys=True),
                    "threshold": threshold,
                    "speedup": layer_speedup(layers, cache.num_layers),
                    "mean_exit_layer": float(layers.double().mean()),
                    "flops_speedup": math.nan
                    if flops is None
                    else flops.speedup(layers, cache.lengths, rule.needs_distances),
                    **score(task, answers, cache.labels),
                }
            )
    return rows


def sweep_splits(
    caches: Mapping[str, ExitCache],
    task: TaskSpec,
    rules: Mapping[str, Mapping[str, Any]],
    flops: FlopsModel | None,
    num_thresholds: int = 60,
    extra_thresholds: Mapping[str, Sequence[float]] | None = None,
) -> list[Row]:
    """`sweep_split` on every split: the first at its own thresholds, every other split at its
    own and at the first split's (so that thresholds chosen on the first can be scored there,
    `add_deployed_readings`)."""
    first, *others = caches
    extra = {k: list(v) for k, v in (extra_thresholds or {}).items()}
    rows = sweep_split(first, caches[first], task, rules, flops, num_thresholds, extra)
    for row in rows:
        extra.setdefault(row["rule"], []).append(row["threshold"])
    for split in others:
        rows += sweep_split(split, caches[split], task, rules, flops, num_thresholds, extra)
    return rows


def full_depth_scores(task: TaskSpec, cache: ExitCache) -> dict[str, float]:
    """The last exit's scores: the model with early exit switched off."""
    return score(task, predictions(cache.logits[-1], task.is_regression), cache.labels)


def pareto_mask(speedups: Sequence[float], scores: Sequence[float]) -> list[bool]:
    """True for points no other point beats on both speed-up and score."""
    return [
        not any((s2 >= s and v2 >= v) and (s2 > s or v2 > v) for s2, v2 in zip(speedups, scores))
        for s, v in zip(speedups, scores)
    ]


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto points of (speed-up, score) pairs, by increasing speed-up (so decreasing score)."""
    points = list(points)
    keep = pareto_mask([s for s, _ in points], [v for _, v in points])
    return sorted(set(p for p, k in zip(points, keep) if k))


def frontier_score(points: Sequence[tuple[float, float]], target: float) -> tuple[float | None, bool]:
    """The Pareto frontier read at speed-up `target`, and whether the reading is interpolated.

    Between the two Pareto points that bracket the target, the score is interpolated linearly
    in speed-up, so a rule with a coarse threshold grid is read where its frontier passes the
    target rather than at the next point it happens to have. Below the slowest Pareto point the
    reading is that point's score; beyond the fastest there is none (None)."""
    frontier = pareto_frontier(points)
    if not frontier or frontier[-1][0] < target - 1e-9:
        return None, False
    for (s0, v0), (s1, v1) in zip(frontier, frontier[1:]):
        if s0 < target - 1e-9 and target < s1 - 1e-9:
            return v0 + (v1 - v0) * (target - s0) / (s1 - s0), True
    return max(v for s, v in frontier if s >= target - 1e-9), False


def frontier_area(points: Sequence[tuple[float, float]], upto: float) -> float:
    """Mean over speed-ups s ∈ [1, upto] of `frontier_score` (exact: the reading is piecewise
    linear between Pareto points and constant below the slowest one)."""
    knots = sorted({1.0, upto} | {s for s, _ in pareto_frontier(points) if 1.0 < s < upto})
    values = [frontier_score(points, s)[0] for s in knots]
    area = sum((b - a) * (va + vb) / 2 for a, b, va, vb in zip(knots, knots[1:], values, values[1:]))
    return area / (upto - 1.0)


def reaching(rows: list[Row], target: float) -> Row | None:
    """The slowest point whose speed-up is at least `target` (what deploying that threshold gives)."""
    candidates = [r for r in rows if r["speedup"] >= target - 1e-9]
    return min(candidates, key=lambda r: (r["speedup"], -r["threshold"])) if candidates else None


def summarize(rows: list[Row], metric: str, targets: Sequence[float]) -> dict[str, dict[str, Any]]:
    """Per split and rule, at each target speed-up: the deployable point (the slowest threshold
    reaching it: its threshold, the speed-up it actually reached and its score) and the Pareto
    frontier's reading there (`frontier_score`); and the area under the rule's frontier over the
    speed-ups every rule reaches."""
    summary: dict[str, dict[str, Any]] = {}
    for split in dict.fromkeys(r["split"] for r in rows):
        by_rule = {
            rule: [r for r in rows if r["split"] == split and r["rule"] == rule]
            for rule in dict.fromkeys(r["rule"] for r in rows if r["split"] == split)
        }
        common = min(max(r["speedup"] for r in rule_rows) for rule_rows in by_rule.values())
        summary[split] = {"auc_range": [1.0, common], "rules": {}}
        for rule, rule_rows in by_rule.items():
            points = [(r["speedup"], r[metric]) for r in rule_rows]
            targets_entry = {}
            for target in targets:
                point = reaching(rule_rows, target)
                frontier, interpolated = frontier_score(points, target)
                targets_entry[str(target)] = (
                    None
                    if point is None
                    else {
                        "threshold": point["threshold"],
                        "speedup": point["speedup"],
                        metric: point[metric],
                        "frontier": frontier,
                        "interpolated": interpolated,
                    }
                )
            summary[split]["rules"][rule] = {
                "params": json.loads(rule_rows[0]["params"]),
                "targets": targets_entry,
                "auc": frontier_area(points, common) if common > 1.0 else None,
            }
    return summary


def add_deployed_readings(summary: dict[str, dict[str, Any]], rows: list[Row], metric: str) -> None:
    """Score the thresholds chosen on the first split (the deployed ones, `thresholds.json`)
    on every other split: per rule and target, `summary[split]["rules"][rule]["deployed"]`
    holds that threshold, the speed-up it reaches on this split and its score there. With a
    calibration split first, this is the calibrated reading of dev; the split's own `targets`
    (thresholds chosen on itself) are the oracle reading. Each other split must have been swept
    at the first split's thresholds too (`sweep_split`'s `extra_thresholds`)."""
    deploy_split, *other_splits = summary
    at = {(r["split"], r["rule"], r["threshold"]): r for r in rows}
    for split in other_splits:
        for rule, entry in summary[split]["rules"].items():
            chosen = summary[deploy_split]["rules"].get(rule, {}).get("targets", {})
            entry["deployed"] = {
                target: None
                if point is None
                else {
                    "threshold": point["threshold"],
                    "speedup": at[split, rule, point["threshold"]]["speedup"],
                    metric: at[split, rule, point["threshold"]][metric],
                }
                for target, point in chosen.items()
            }


def summary_markdown(
    summary: dict[str, dict[str, Any]],
    metric: str,
    full_depth: Mapping[str, Mapping[str, float]],
    targets: Sequence[float],
) -> str:
    """`summary.md`: per split, each rule's score at the target speed-ups and its frontier area."""
    lines = ["# Early-exit sweep", ""]
    for split, info in summary.items():
        low, high = info["auc_range"]
        lines += [
            f"## {split} — {metric} ×100 (full depth: {100 * full_depth[split][metric]:.2f})",
            "",
            "Per target: the score at the slowest threshold reaching it, with the speed-up it actually "
            "reached in brackets, then the Pareto frontier read at the target (≈: interpolated "
            "between the two Pareto points around it). "
            f"AUC: mean frontier reading over speed-ups {low:.2f}×–{high:.2f}×.",
            "",
            "| rule | params | " + " | ".join(f"{t}×" for t in targets) + " | AUC |",
            "|---|---|" + "---:|" * (len(targets) + 1),
        ]
        for rule, entry in info["rules"].items():
            cells = []
            for t in targets:
                point = entry["targets"][str(t)]
                if point is None:
                    cells.append("—")
                    continue
                mark = "≈" if point["interpolated"] else ""
                cells.append(
                    f"{100 * point[metric]:.2f} ({point['speedup']:.2f}×) / {mark}{100 * point['frontier']:.2f}"
                )
            auc = "—" if entry["auc"] is None else f"{100 * entry['auc']:.2f}"
            params = ", ".join(f"{k}={v}" for k, v in entry["params"].items()) or "—"
            lines.append(f"| {rule} | {params} | " + " | ".join(cells) + f" | {auc} |")
        lines.append("")
        lines += _deployed_markdown(split, info, metric, targets, deploy_split=next(iter(summary)))
    return "\n".join(lines)


def _deployed_markdown(
    split: str, info: dict[str, Any], metric: str, targets: Sequence[float], deploy_split: str
) -> list[str]:
    deployed = {rule: entry["deployed"] for rule, entry in info["rules"].items() if "deployed" in entry}
    if not deployed:
        return []
    lines = [
        f"### {split} at the thresholds chosen on {deploy_split} (deployed, `thresholds.json`)",
        "",
        f"{metric} ×100, with the speed-up reached on {split} in brackets: what deploying the "
        f"threshold that reached each target on {deploy_split} gives here.",
        "",
        "| rule | " + " | ".join(f"{t}×" for t in targets) + " |",
        "|---|" + "---:|" * len(targets),
    ]
    for rule, points in deployed.items():
        cells = [
            "—" if point is None else f"{100 * point[metric]:.2f} ({point['speedup']:.2f}×)"
            for point in (points.get(str(t)) for t in targets)
        ]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot_sweep(
    rows: list[Row], metric: str, full_depth: Mapping[str, Mapping[str, float]], num_layers: int, path: Any
) -> None:
    """`sweep.png`: per split, the metric against speed-up, one curve per rule, Pareto points filled."""
    splits = list(dict.fromkeys(r["split"] for r in rows))
    fig, axes = plt.subplots(1, len(splits), figsize=(7 * len(splits), 5), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, split in zip(axes[0], splits):
        for index, rule in enumerate(dict.fromkeys(r["rule"] for r in rows)):
            rule_rows = sorted(
                (r for r in rows if r["split"] == split and r["rule"] == rule), key=lambda r: r["speedup"]
            )
            if not rule_rows:
                continue
            xs = [r["speedup"] for r in rule_rows]
            ys = [100 * r[metric] for r in rule_rows]
            front = pareto_mask(xs, ys)
            colour = colours(index)
            ax.plot(xs, ys, color=colour, alpha=0.35, linewidth=1)
            ax.plot(
                [x for x, f in zip(xs, front) if f],
                [y for y, f in zip(ys, front) if f],
                MARKERS[index % len(MARKERS)] + LINES[index % len(LINES)],
                color=colour,
                markersize=4,
                linewidth=1.8,
                label=rule,
            )
        ax.axhline(100 * full_depth[split][metric], color="black", linestyle="--", linewidth=1, label="full depth")
        ax.set_xlim(1, num_layers)
        ax.set_xlabel("speed-up ratio  L·N / Σ exit layers")
        ax.set_ylabel(f"{metric} ×100")
        ax.set_title(split)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        "Speed–accuracy trade-off per exit rule\n(faint: every threshold; markers: Pareto points)", fontsize=11
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
