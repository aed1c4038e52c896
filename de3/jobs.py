"""The jobs behind `run.py`: `train` (fit, then evaluate and sweep the best checkpoint),
`sweep` (evaluate and sweep an existing checkpoint), `predict` (real early exit, with the
predictor `build_predictor` makes) and `serve` (the same predictor behind HTTP)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

from de3.callbacks.wandb_run_id import stored_wandb_run_id
from de3.data.custom import complete_custom_task
from de3.data.datamodule import seeded_subset
from de3.data.inputs import read_inputs
from de3.data.sources import Example
from de3.data.splits import load_splits, write_split_rows
from de3.data.tasks import TaskSpec, task_from_config
from de3.errors import De3Error
from de3.flops import layer_speedup
from de3.hub import missing_hub_inputs
from de3.models.exit_rules import validate_exit_config
from de3.models.module import MultiExitModule
from de3.predictor import EarlyExitPredictor
from de3.results import class_results, print_results, save_results
from de3.sweep import score
from de3.thresholds import FILENAME, RunThresholds, recorded_run, resolve_exit_setting
from de3.utils.io import csv_text, write_text_atomic
from de3.utils.provenance import git_commit

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Build every `_target_` entry of a config group given as a mapping of name → config."""
    return [instantiate(node) for node in (group or {}).values() if node is not None and "_target_" in node]


def build_datamodule(cfg: DictConfig, task: TaskSpec, tokenizer: Any, stage: str) -> L.LightningDataModule:
    """The data module for `task`, its splits for `stage` loaded now, so bad data fails early.
    Splits cut from the training file leave their rows in the run folder (`data_split.json`)."""
    datamodule = instantiate(cfg.data, _partial_=True)(task=task, tokenizer=tokenizer)
    datamodule.setup(stage)
    if task.local.held_out:
        write_split_rows(datamodule.origins, Path(cfg.paths.output_dir) / "data_split.json")
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
                **class_results(model.task.label_names, model.eval_confusion),
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
    complete_custom_task(cfg.task)  # before the model, whose checkpoint keeps it
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
    checkpoint = checkpoint_to_evaluate(trainer)
    trainer.validate(model, datamodule=datamodule, ckpt_path=checkpoint, verbose=False)
    return _report(cfg, model, trainer, checkpoint, started)


def checkpoint_to_evaluate(trainer: L.Trainer) -> str | None:
    """The best checkpoint; where none was chosen (`trainer.max_steps` stopped training before
    its first validation), the latest one saved (`last.ckpt`), so that the sweep runs on weights
    that a file holds and `thresholds.json` can name. None when no checkpoint was saved."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        return best
    latest = [callback.best_model_path for callback in trainer.checkpoint_callbacks if callback.monitor is None]
    return next((path for path in latest if path), None)


def sweep(cfg: DictConfig) -> float:
    """Evaluate a trained model on its task's eval splits and run the callbacks (the sweep):
    `ckpt_path`, or the checkpoint `run_dir`'s thresholds were computed on, with the rule
    parameters it recorded unless the command line sets them. Task and backbone come from the
    checkpoint; data settings from `cfg.data`."""
    started = time.perf_counter()
    if not cfg.get("ckpt_path") and not cfg.get("run_dir"):
        raise De3Error("mode=sweep needs run_dir=<run folder> or ckpt_path=/path/to/checkpoint.ckpt")
    checkpoint = Path(cfg.ckpt_path).expanduser() if cfg.get("ckpt_path") else None
    if cfg.get("run_dir"):
        run = RunThresholds.read(Path(cfg.run_dir).expanduser() / FILENAME)
        checkpoint = checkpoint or run.recorded_checkpoint()
        overrides = command_line_overrides()
        _use_recorded_params(cfg, run, overrides)
        _use_recorded_rows(cfg, run, overrides)
    model = MultiExitModule.from_checkpoint(checkpoint)
    datamodule = build_datamodule(cfg, model.task, model.tokenizer, "validate")
    trainer = build_trainer(cfg)
    trainer.validate(model, datamodule=datamodule, verbose=False)
    return _report(cfg, model, trainer, str(checkpoint), started)


def command_line_overrides() -> dict[str, str]:
    """What the command line sets (key → value as written); empty outside a Hydra job."""
    if not HydraConfig.initialized():
        return {}
    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return {o.key_or_group: o.get_value_element_as_str() for o in parsed if not o.is_delete()}


def _given(overrides: dict[str, str], key: str) -> bool:
    """Whether the command line sets `key` itself or a config node above it."""
    parts = key.split(".")
    return any(".".join(parts[: n + 1]) in overrides for n in range(len(parts)))


def _use_recorded_params(cfg: DictConfig, run: RunThresholds, overrides: dict[str, str]) -> None:
    """Set `exit.params` to the parameters `run` recorded, except those the command line sets."""
    with open_dict(cfg):
        for rule, params in cfg.exit.params.items():
            for key, value in (run.params(rule) or {}).items():
                if not _given(overrides, f"exit.params.{rule}.{key}"):
                    params[key] = value


def _use_recorded_rows(cfg: DictConfig, run: RunThresholds, overrides: dict[str, str]) -> None:
    """Set `data.max_seq_length`, `data.eval_limit` and `data.seed` (which draws that subset) to
    what `run` recorded, except those the command line sets: a sweep again sees the same inputs."""
    recorded = {"max_seq_length": run.max_seq_length, "eval_limit": run.eval_limit, "seed": run.data_seed}
    with open_dict(cfg):
        for key, value in recorded.items():
            if value is not None and not _given(overrides, f"data.{key}"):
                cfg.data[key] = value


def _check_checkpoint_matches(module: MultiExitModule, overrides: dict[str, str]) -> None:
    """A task or backbone named on the command line must be the checkpoint's own."""
    actual = {"task": module.task.name, "backbone": module.hparams.backbone["name"]}
    for key, value in actual.items():
        if key in overrides and overrides[key] != value:
            raise De3Error(f"the checkpoint was trained with {key}={value}, not {key}={overrides[key]}")


def build_predictor(cfg: DictConfig, device: str = "cpu") -> EarlyExitPredictor:
    """The early-exit predictor of `mode=predict` (and serving): the model of `run_dir` (the
    checkpoint its `thresholds.json` was computed on) or of `ckpt_path`; `exit.rule` with
    `exit.threshold`, or the threshold that reached `exit.target_speedup` in the sweep. The
    rule's parameters, `max_seq_length` and `exit.precision` are the ones the sweep recorded, unless the command
    line sets them; `data.eval_batch_size` inputs per batch, on `device` (`auto`: CUDA when present)."""
    rule, overrides = cfg.exit.rule, command_line_overrides()
    configured = OmegaConf.to_container(cfg.exit.params.get(rule) or OmegaConf.create(), resolve=True)
    setting = resolve_exit_setting(
        rule,
        run_dir=cfg.get("run_dir"),
        checkpoint=cfg.get("ckpt_path"),
        threshold=cfg.exit.get("threshold"),
        target_speedup=cfg.exit.get("target_speedup"),
        params={k: v for k, v in configured.items() if _given(overrides, f"exit.params.{rule}.{k}")},
        defaults=configured,
        precision=cfg.exit.precision if _given(overrides, "exit.precision") else None,
    )
    module = MultiExitModule.from_checkpoint(setting.checkpoint)
    _check_checkpoint_matches(module, overrides)
    max_seq_length = setting.max_seq_length
    if max_seq_length is None or _given(overrides, "data.max_seq_length"):
        max_seq_length = cfg.data.max_seq_length
    return EarlyExitPredictor(
        module.model,
        module.tokenizer,
        module.task,
        rule,
        setting.threshold,
        setting.params,
        max_seq_length=max_seq_length,
        batch_size=cfg.data.eval_batch_size,
        device=device,
        precision=setting.precision,
    )


def predict(cfg: DictConfig) -> float:
    """Real early exit over an input file or a split of the checkpoint's task; writes
    `predictions.csv` (one row per input: prediction, probability, exit layer). Returns the
    speed-up ratio achieved."""
    settings = cfg.predict
    if (settings.input is None) == (settings.split is None):
        raise De3Error("mode=predict needs exactly one of predict.input=FILE and predict.split=SPLIT")
    predictor = build_predictor(cfg, settings.device)
    task = predictor.task
    if settings.input is not None:
        encoding = settings.encoding or task.local.encoding  # default: that of the files the model learnt from
        examples = read_inputs(settings.input, settings.text_columns or task.local.text_columns, encoding)
    else:
        examples = load_splits(task, [settings.split], cfg.data.data_dir, cfg.data.source)[settings.split]
        examples = _rows_swept(cfg, task, settings.split, examples)
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
        "%d inputs in %.2fs: rule %s %s, threshold %.6g, mean exit layer %.2f, speed-up ratio %.2f×; wrote %s",
        len(rows),
        elapsed,
        predictor.rule.name,
        json.dumps(predictor.params),
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


def _rows_swept(cfg: DictConfig, task: TaskSpec, split: str, examples: list[Example]) -> list[Example]:
    """The rows of `split` the sweep scored: of an eval split, the seeded subset of the
    `data.eval_limit` that `thresholds.json` recorded (unless the command line sets
    data.eval_limit), so that predicting the recorded split reproduces its speed-ups exactly;
    else every row."""
    if _given(command_line_overrides(), "data.eval_limit"):
        return seeded_subset(examples, cfg.data.eval_limit, cfg.data.seed)
    run = recorded_run(cfg.get("run_dir"), cfg.get("ckpt_path"))
    if run is None or run.eval_limit is None or split not in task.eval_splits:
        return examples
    log.info(
        "predict.split=%s: the %d of %d rows the sweep scored (data.eval_limit=%d, seed %d, recorded in %s)",
        split,
        min(run.eval_limit, len(examples)),
        len(examples),
        run.eval_limit,
        run.data_seed,
        run.path,
    )
    return seeded_subset(examples, run.eval_limit, run.data_seed)


def serve(cfg: DictConfig) -> None:
    """Serve `build_predictor(cfg)` on LitServe until stopped: `POST /predict`, `GET /health`."""
    from de3.serving import build_server, early_exit_api, run_until_stopped  # LitServe loads only for this mode

    settings = cfg.serve
    predictor = build_predictor(cfg)
    api = early_exit_api(predictor, settings.max_batch_size, settings.batch_timeout, settings.threads)
    log.info(
        "serving %s (rule %s, threshold %.6g) on http://%s:%d/predict",
        predictor.task.name,
        predictor.rule.name,
        predictor.threshold,
        settings.host,
        settings.port,
    )
    server = build_server(
        api,
        workers=settings.workers,
        timeout=settings.timeout,
        device=settings.device,
        max_body_bytes=settings.max_body_bytes,
        fast_queue=settings.fast_queue,
    )
    run_until_stopped(server, settings.host, settings.port)


JOBS = {"train": train, "sweep": sweep, "predict": predict, "serve": serve}


def require_hub_inputs(cfg: DictConfig) -> None:
    """Fail at once, naming each of them, when the model or data `train` needs are not local
    and the Hugging Face hub is unreachable (rather than after minutes of download retries). A
    custom task's files are local paths, checked when they are read."""
    if cfg.task.get("files") is not None:
        return
    task = task_from_config(cfg.task)
    splits = ("train", *task.eval_splits)
    missing = missing_hub_inputs(cfg.backbone, task, splits, cfg.data.data_dir, cfg.data.source)
    if missing:
        raise De3Error(f"{len(missing)} input(s) missing: " + "; ".join(missing))


def run(cfg: DictConfig) -> float | None:
    """Dispatch on `cfg.mode`, once the exit settings are known to be valid (a misspelt rule or
    a patience of 0 fails now, not after hours of training)."""
    if cfg.mode not in JOBS:
        raise De3Error(f"unknown mode {cfg.mode!r}; choose from {sorted(JOBS)}")
    validate_exit_config(OmegaConf.to_container(cfg.exit, resolve=True))
    if cfg.mode == "train":
        require_hub_inputs(cfg)
    return JOBS[cfg.mode](cfg)
