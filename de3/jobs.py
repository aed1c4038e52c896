"""The jobs behind `run.py`: `train` (fit, then evaluate and sweep the best checkpoint),
`sweep` (evaluate and sweep an existing checkpoint), `predict` (real early exit) and `serve`
(real early exit behind HTTP)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

from de3.callbacks.wandb_run_id import stored_wandb_run_id
from de3.data.inputs import read_inputs
from de3.data.sources import load_split
from de3.data.tasks import TaskSpec, task_from_config
from de3.errors import De3Error
from de3.flops import layer_speedup
from de3.models.exit_rules import get_rule
from de3.models.module import MultiExitModule
from de3.predictor import EarlyExitPredictor, resolve_threshold
from de3.results import print_results, save_results
from de3.sweep import score
from de3.utils.io import csv_text, write_text_atomic
from de3.utils.provenance import git_commit

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


def _report(
    cfg: DictConfig, model: MultiExitModule, trainer: L.Trainer, checkpoint: str | None, started: float
) -> float:
    scores = model.eval_scores
    if trainer.is_global_zero:
        title = f"{model.task.name} · {model.hparams.backbone['name']} · per-exit dev scores (×100)"
        output_dir = Path(cfg.paths.output_dir)
        print_results(scores, title)
        save_results(
            output_dir,
            scores,
            title,
            {
                "task": model.task.name,
                "backbone": model.hparams.backbone["name"],
                "checkpoint": checkpoint,
                "global_step": trainer.global_step,
                "wall_time_s": round(time.perf_counter() - started, 1),
                "git_commit": git_commit(),
                "config": OmegaConf.to_container(cfg, resolve=True),
            },
        )
        log.info("results written to %s", output_dir)
    return scores[model.task.eval_splits[0]][model.task.main_metric][-1]


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint `train` continues from: `ckpt_path` as a file, or "last" for this run
    folder's last checkpoint (rerun a killed run's command with `hydra.run.dir=<its folder>
    ckpt_path=last`; a folder with no checkpoint yet starts from the beginning)."""
    path = cfg.get("ckpt_path")
    if path is None:
        return None
    if str(path) == "last":
        checkpoints = (cfg.get("callbacks") or {}).get("last_checkpoint") or {}
        last = Path(checkpoints.get("dirpath") or Path(cfg.paths.output_dir) / "checkpoints") / "last.ckpt"
        if not last.is_file():
            log.warning("ckpt_path=last: there is no %s yet; training from the start", last)
            return None
        path = last
    path = Path(path).expanduser()
    if not path.is_file():
        raise De3Error(f"ckpt_path: no checkpoint file at {path}")
    log.info("resuming from %s", path)
    return str(path)


def continue_wandb_run(cfg: DictConfig, checkpoint: str) -> None:
    """Point the W&B logger at the run id stored in `checkpoint`, so the resumed run continues it."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    run_id = stored_wandb_run_id(checkpoint)
    if wandb_cfg is not None and run_id:
        with open_dict(cfg):
            wandb_cfg.id = run_id
            wandb_cfg.resume = "allow"
        log.info("continuing W&B run %s", run_id)


def train(cfg: DictConfig) -> float:
    """Seed, fit, re-evaluate the best checkpoint on the eval splits (the sweep callback runs
    there), print and save per-exit scores. Returns the best checkpoint's main score (final
    exit, first eval split), for Hydra sweepers."""
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    resume_from = resume_checkpoint(cfg)
    if resume_from is not None:
        continue_wandb_run(cfg, resume_from)
    model = instantiate(cfg.model)
    if model.loss_fn.num_stages > 1 and cfg.trainer.get("strategy") == "ddp":
        # each stage freezes part of the model, which DDP must be told to expect
        with open_dict(cfg):
            cfg.trainer.strategy = "ddp_find_unused_parameters_true"
    datamodule = build_datamodule(cfg, task_from_config(cfg.task), model.tokenizer, "fit")
    trainer = build_trainer(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
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


def _check_checkpoint_matches(module: MultiExitModule) -> None:
    """A task or backbone named on the command line must be the checkpoint's own."""
    given = dict(o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
    actual = {"task": module.task.name, "backbone": module.hparams.backbone["name"]}
    for key, value in actual.items():
        if key in given and given[key] != value:
            raise De3Error(f"the checkpoint was trained with {key}={value}, not {key}={given[key]}")


def build_predictor(cfg: DictConfig) -> EarlyExitPredictor:
    """The real early-exit predictor of `mode=predict` and `mode=serve`: `ckpt_path`'s model
    with `exit.rule`, its threshold (given, or read for `exit.target_speedup`) and parameters."""
    if not cfg.get("ckpt_path"):
        raise De3Error(f"mode={cfg.mode} needs ckpt_path=/path/to/checkpoint.ckpt")
    rule = cfg.exit.rule
    threshold = resolve_threshold(cfg.ckpt_path, rule, cfg.exit.get("threshold"), cfg.exit.get("target_speedup"))
    module = MultiExitModule.from_checkpoint(cfg.ckpt_path)
    _check_checkpoint_matches(module)
    return EarlyExitPredictor(
        module.model,
        module.tokenizer,
        module.task,
        rule,
        threshold,
        cfg.exit.params.get(rule),
        max_seq_length=cfg.data.max_seq_length,
        batch_size=cfg.data.eval_batch_size,
    )


def predict(cfg: DictConfig) -> float:
    """Real early exit over an input file or a split of the checkpoint's task; writes
    `predictions.csv` (one row per input: prediction, probability, exit layer). Returns the
    speed-up ratio achieved."""
    settings = cfg.predict
    if (settings.input is None) == (settings.split is None):
        raise De3Error("mode=predict needs exactly one of predict.input=FILE and predict.split=SPLIT")
    predictor = build_predictor(cfg)
    task = predictor.task
    if settings.input is not None:
        examples = read_inputs(settings.input, settings.text_columns or task.local.text_columns)
    else:
        examples = load_split(task, settings.split, cfg.data.data_dir, cfg.data.source)
    started = time.perf_counter()
    out = predictor.predict([e.texts for e in examples])
    elapsed = time.perf_counter() - started
    speedup = layer_speedup(out.exit_layer, predictor.model.num_layers)
    label = (lambda v: f"{v:.4f}") if task.is_regression else (lambda v: task.label_names[int(v)])
    rows = [
        {
            "input": e.where,
            "prediction": label(p),
            "probability": "" if out.probability is None else f"{out.probability[i]:.4f}",
            "exit_layer": int(out.exit_layer[i]),
        }
        for i, (e, p) in enumerate(zip(examples, out.prediction.tolist()))
    ]
    output = write_text_atomic(Path(cfg.paths.output_dir) / "predictions.csv", csv_text(rows))
    log.info(
        "%d inputs in %.2fs: rule %s, threshold %.6g, mean exit layer %.2f, speed-up ratio %.2f×; wrote %s",
        len(rows),
        elapsed,
        predictor.rule.name,
        predictor.threshold,
        out.exit_layer.double().mean(),
        speedup,
        output,
    )
    if all(e.label is not None for e in examples):
        labels = torch.tensor([e.label for e in examples])
        for name, value in score(task, out.prediction, labels).items():
            log.info("%s on %s: %.4f", name, settings.split or settings.input, value)
    return speedup


def serve(cfg: DictConfig) -> None:
    """Serve `build_predictor(cfg)` on LitServe until stopped: `POST /predict`, `GET /health`."""
    from de3.serving import build_server, early_exit_api  # LitServe loads only for this mode

    settings = cfg.serve
    predictor = build_predictor(cfg)
    api = early_exit_api(predictor, settings.max_batch_size, settings.batch_timeout)
    log.info(
        "serving %s (rule %s, threshold %.6g) on http://%s:%d/predict",
        predictor.task.name,
        predictor.rule.name,
        predictor.threshold,
        settings.host,
        settings.port,
    )
    server = build_server(api, workers=settings.workers, timeout=settings.timeout)
    server.run(host=settings.host, port=settings.port, generate_client_file=False)


JOBS = {"train": train, "sweep": sweep, "predict": predict, "serve": serve}


def run(cfg: DictConfig) -> float | None:
    """Dispatch on `cfg.mode`."""
    if cfg.mode not in JOBS:
        raise De3Error(f"unknown mode {cfg.mode!r}; choose from {sorted(JOBS)}")
    get_rule(cfg.exit.rule)  # a misspelt rule fails now, not after hours of training
    return JOBS[cfg.mode](cfg)
