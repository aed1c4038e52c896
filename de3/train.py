"""The training job behind `run.py`: build everything from config, fit, evaluate the best checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from de3.data.tasks import task_from_config
from de3.errors import De3Error
from de3.results import print_results, save_results

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Build every `_target_` entry of a config group given as a mapping of name → config."""
    return [instantiate(node) for node in (group or {}).values() if node is not None and "_target_" in node]


def build(cfg: DictConfig) -> tuple[L.LightningModule, L.LightningDataModule, L.Trainer]:
    """Model, data module and trainer (with its callbacks and loggers) from a composed config."""
    task = task_from_config(cfg.task)
    model = instantiate(cfg.model)
    datamodule = instantiate(cfg.data, _partial_=True)(task=task, tokenizer=model.tokenizer)
    datamodule.setup("fit")  # fail on bad data now, before loggers start runs or training starts
    loggers: list[Logger] = _instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=_instantiate_all(cfg.get("callbacks")), logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return model, datamodule, trainer


def train(cfg: DictConfig) -> float:
    """Seed, fit, re-evaluate the best checkpoint on the eval splits, print and save per-exit scores.

    Returns the best checkpoint's main score (final exit, first eval split), for Hydra sweepers.
    """
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    model, datamodule, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if trainer.interrupted:
        raise De3Error("training was interrupted; no results were written")
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    trainer.validate(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    scores = model.eval_scores
    title = f"{model.task.name} · {cfg.backbone.name} · per-exit dev scores (×100)"
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        print_results(scores, title)
        save_results(output_dir, scores, title, {
            "task": model.task.name, "backbone": cfg.backbone.name,
            "checkpoint": best or None, "global_step": trainer.global_step,
            "wall_time_s": round(time.perf_counter() - started, 1),
        })
        log.info("results written to %s", output_dir)
    return scores[model.task.eval_splits[0]][model.task.main_metric][-1]
