"""After the best checkpoint is evaluated: the speed–accuracy sweep of every exit rule,
written as files in the run's output directory and logged to W&B."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn

from de3.errors import De3Error
from de3.exit_cache import ExitCache, collect_exit_cache, save_exit_caches
from de3.flops import FlopsModel, cost_markdown
from de3.models.exit_rules import get_rule, validate_params
from de3.sweep import (
    add_deployed_readings,
    full_depth_scores,
    plot_sweep,
    summarize,
    summary_markdown,
    sweep_splits,
)
from de3.thresholds import FILENAME, thresholds_document
from de3.utils.io import csv_text, write_text_atomic

log = logging.getLogger(__name__)


class ExitSweep(L.Callback):
    """Runs when `trainer.validate` ends (after fit, on the best checkpoint; or `mode=sweep`):
    one cached pass over every eval split, then every applicable rule of `rules` (name → its
    parameters) at `num_thresholds` data-chosen thresholds plus `extra_thresholds`.

    Writes `sweep.csv`, `sweep.png`, `summary.md`, `thresholds.json` (per rule, its parameters
    and the threshold reaching each of `target_speedups` on the first eval split, and every
    threshold's speed-up there; with that split, its rows (`data.eval_limit`), the checkpoint
    the trainer loaded, the input length, and the precision and kind of device the exit cache was
    computed in: `precision`, what real early exit will run in) and `exit_cache.pt`. The
    other eval splits are also scored at those thresholds (`summary.md`: "deployed"): with a
    calibration split first, dev's calibrated reading beside its oracle one.
    """

    def __init__(
        self,
        output_dir: str,
        rules: Mapping[str, Mapping[str, Any]],
        num_thresholds: int = 60,
        extra_thresholds: Mapping[str, Sequence[float]] | None = None,
        target_speedups: Sequence[float] = (1.5, 2.0, 3.0),
        precision: str = "fp32",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.precision = precision
        # unknown rules and bad parameters fail now, not after training
        self.rules = {name: validate_params(get_rule(name), params) for name, params in rules.items()}
        self.num_thresholds = num_thresholds
        self.extra_thresholds = {k: list(v) for k, v in (extra_thresholds or {}).items()}
        self.target_speedups = list(target_speedups)
        self.timings: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.VALIDATING or not trainer.is_global_zero:
            return
        task, model = pl_module.task, pl_module.model
        started = time.perf_counter()
        caches: dict[str, ExitCache] = {
            split: collect_exit_cache(model, loader, description=f"caching exits ({split})", precision=self.precision)
            for split, loader in zip(task.eval_splits, trainer.datamodule.whole_eval_dataloaders())
        }
        cached = time.perf_counter()
        costs = FlopsModel.of(model)
        rows = sweep_splits(caches, task, self.rules, costs, self.num_thresholds, self.extra_thresholds)
        full_depth = {split: full_depth_scores(task, cache) for split, cache in caches.items()}
        summary = summarize(rows, task.main_metric, self.target_speedups)
        add_deployed_readings(summary, rows, task.main_metric)
        self.timings = {"cache_pass_s": cached - started, "simulation_s": time.perf_counter() - cached}
        first_cache = next(iter(caches.values()))
        cost = cost_markdown(model, float(first_cache.lengths.double().mean()))
        deploy_split = next(iter(summary))  # the split the deployed thresholds are chosen on
        data = trainer.datamodule
        deploy = thresholds_document(
            summary[deploy_split]["rules"],
            rows,
            deploy_split,
            trainer.ckpt_path or pl_module.checkpoint_path,  # fit → validate(best or last), or mode=sweep
            self.output_dir,
            getattr(data, "max_seq_length", None),
            getattr(data, "eval_limit", None),
            getattr(data, "seed", None),
            precision=self.precision,
            device=next(model.parameters()).device.type,
        )
        try:
            self._write(rows, summary, full_depth, caches, task.main_metric, model.num_layers, cost, deploy)
        except OSError as err:
            raise De3Error(
                f"could not write the sweep's files to {self.output_dir}: {err}. "
                f"Files written before the failure are complete; rerun with mode=sweep ckpt_path=<checkpoint>"
            ) from err
        self._log_wandb(trainer, rows, summary, task.main_metric)
        log.info(
            "sweep: %d points (%d rules) in %.1fs + %.1fs cache pass; files in %s",
            len(rows),
            len(summary[task.eval_splits[0]]["rules"]),
            self.timings["simulation_s"],
            self.timings["cache_pass_s"],
            self.output_dir,
        )

    def _write(self, rows, summary, full_depth, caches, metric: str, num_layers: int, cost: str, deploy) -> None:
        out = self.output_dir
        save_exit_caches(out / "exit_cache.pt", caches)
        write_text_atomic(out / "sweep.csv", csv_text(rows))
        plot_sweep(rows, metric, full_depth, num_layers, out / "sweep.png")
        write_text_atomic(
            out / "summary.md",
            summary_markdown(summary, metric, full_depth, self.target_speedups)
            + "\n## Model cost (counted in flops_speedup)\n\n"
            + cost,
        )
        write_text_atomic(out / FILENAME, json.dumps(deploy, indent=2) + "\n")

    def _log_wandb(self, trainer: L.Trainer, rows, summary, metric: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        try:
            import wandb

            run = loggers[0].experiment
            columns = list(rows[0])
            table = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])
            first_split = next(iter(summary))
            first_rows = wandb.Table(
                columns=columns, data=[[r[c] for c in columns] for r in rows if r["split"] == first_split]
            )
            run.log(
                {
                    "sweep/points": table,
                    "sweep/curve": wandb.plot.line(
                        first_rows, "speedup", metric, stroke="rule", title=f"{metric} vs speed-up ({first_split})"
                    ),
                }
            )
            for split, info in summary.items():
                for rule, entry in info["rules"].items():
                    prefix = f"sweep/{split}/{rule}"
                    for target, point in entry["targets"].items():
                        if point is not None:
                            run.summary[f"{prefix}/{metric}@{target}x"] = point[metric]
                    for target, point in entry.get("deployed", {}).items():  # at the first split's thresholds
                        if point is not None:
                            run.summary[f"{prefix}/deployed_{metric}@{target}x"] = point[metric]
                            run.summary[f"{prefix}/deployed_speedup@{target}x"] = point["speedup"]
                    if entry["auc"] is not None:
                        run.summary[f"{prefix}/auc"] = entry["auc"]
        except Exception as err:  # W&B trouble must never cost the sweep's files
            log.warning("could not log the sweep to W&B: %s", err)
