"""The jobs behind `run.py`: `train` (fit, then evaluate and sweep the best checkpoint) and
`sweep` (evaluate and sweep an existing checkpoint). Both print and save per-exit scores."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from de3.data.tasks import TaskSpec, task_from_config
from de3.errors import De3Error
from de3.models.module import MultiExitModule
from de3.results import print_results, save_results

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Build every `_target_` entry of a config group given as a mapping of name → config."""
    return [instantiate(node) for node in (group or {}).values() if node is not None and "_target_" in node]


def build_datamodule(cfg: DictConfig, task: TaskSpec, tokenizer: Any, stage: str) -> L.LightningDataModule:
    """The data module for `task`, its splits for `stage` loaded now, so bad data fails early."""
    datamodule = instantiate(cfg.data, _partial_=True)(task=task, tokenizer=tokenizer)
    datamodule.setup(stage)
    return datamodule


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The trainer with the configured callbacks and loggers (the resolved config logged)."""
    loggers: list[Logger] = _instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=_instantiate_all(cfg.get("callbacks")), logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return trainer


def _report(cfg: DictConfig, model: MultiExitModule, trainer: L.Trainer, checkpoint: str | None, started: float) -> float:
    scores = model.eval_scores
    if trainer.is_global_zero:
        title = f"{model.task.name} · {model.hparams.backbone['name']} · per-exit dev scores (×100)"
        output_dir = Path(cfg.paths.output_dir)
        print_results(scores, title)
        save_results(output_dir, scores, title, {
            "task": model.task.name, "backbone": model.hparams.backbone["name"], "checkpoint": checkpoint,
            "global_step": trainer.global_step, "wall_time_s": round(time.perf_counter() - started, 1),
        })
        log.info("results written to %s", output_dir)
    return scores[model.task.eval_splits[0]][model.task.main_metric][-1]


def train(cfg: DictConfig) -> float:
    """Seed, fit, re-evaluate the best checkpoint on the eval splits (the sweep callback runs
    there), print and save per-exit scores. Returns the best checkpoint's main score (final
    exit, first eval split), for Hydra sweepers."""
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    model = instantiate(cfg.model)
    datamodule = build_datamodule(cfg, task_from_config(cfg.task), model.tokenizer, "fit")
    trainer = build_trainer(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if trainer.interrupted:
        raise De3Error("training was interrupted; no results were written")
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    trainer.validate(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    return _report(cfg, model, trainer, best or None, started)


def sweep(cfg: DictConfig) -> float:
    """Evaluate `cfg.ckpt_path` on its task's eval splits and run the callbacks (the sweep).
    Task and backbone come from the checkpoint; data settings from `cfg.data`."""
    started = time.perf_counter()
    if not cfg.get("ckpt_path"):
        raise De3Error("mode=sweep needs ckpt_path=/path/to/checkpoint.ckpt")
    model = MultiExitModule.from_checkpoint(cfg.ckpt_path)
    datamodule = build_datamodule(cfg, model.task, model.tokenizer, "validate")
    trainer = build_trainer(cfg)
    trainer.validate(model, datamodule=datamodule, verbose=False)
    return _report(cfg, model, trainer, str(cfg.ckpt_path), started)


JOBS = {"train": train, "sweep": sweep}


def run(cfg: DictConfig) -> float:
    """Dispatch on `cfg.mode`."""
    if cfg.mode not in JOBS:
        raise De3Error(f"unknown mode {cfg.mode!r}; choose from {sorted(JOBS)}")
    return JOBS[cfg.mode](cfg)
