"""The LightningModule: multi-exit training, per-exit evaluation, optimizer and schedule."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from de3.data.tasks import task_from_config
from de3.errors import De3Error
from de3.metrics import make_metric, predictions
from de3.models.backbone import EncoderBackbone, load_encoder, load_tokenizer
from de3.models.layer_cache import cache_pooled_layers
from de3.models.losses import stage_starts
from de3.models.multi_exit import MultiExitModel, MultiExitOutput

log = logging.getLogger(__name__)


class MultiExitModule(L.LightningModule):
    """Trains every exit of a `MultiExitModel` with the configured loss and scores every exit
    on every eval split with the task's metrics.

    All arguments are plain config dicts, saved as hyperparameters, so that
    `MultiExitModule.load_from_checkpoint(path)` rebuilds the same model (and tokenizer).
    After each validation epoch, `eval_scores[split][metric]` holds one score per exit, and
    (classification) `eval_confusion[split]` the final exit's confusion matrix.
    """

    def __init__(
        self,
        task: Mapping[str, Any],
        backbone: Mapping[str, Any],
        loss: Mapping[str, Any],
        exits: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        prototypes: Mapping[str, Any] | None = None,
        bypass: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Plain containers, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                name: OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else dict(value)
                for name, value in dict(
                    task=task,
                    backbone=backbone,
                    loss=loss,
                    exits=exits,
                    optimizer=optimizer,
                    prototypes=prototypes,
                    bypass=bypass,
                ).items()
                if value is not None
            }
        )
        self.task = task_from_config(self.hparams.task)
        if prototypes is not None and self.task.is_regression:
            raise De3Error(
                f"task {self.task.name!r} is regression: prototypes (loss=de3) need classes. "
                "Train it with loss=joint; its exits use PABEE's regression patience"
            )
        self.checkpoint_path: Path | None = None  # the file `from_checkpoint` loaded, if any
        self.tokenizer = load_tokenizer(**self.hparams.backbone)
        encoder = load_encoder(**self.hparams.backbone, tokenizer=self.tokenizer)
        self.model = MultiExitModel(
            EncoderBackbone(encoder),
            self.task.num_outputs,
            **self.hparams.exits,
            prototypes=self.hparams.get("prototypes"),
            bypass=self.hparams.get("bypass"),
        )
        self.model.train()  # `from_pretrained` leaves the encoder in eval mode; Lightning keeps modes as found
        self.loss_fn = instantiate(self.hparams.loss)
        self.metrics = nn.ModuleList(
            nn.ModuleList(
                MetricCollection({name: make_metric(name, self.task.num_outputs) for name in self.task.metrics})
                for _ in range(self.model.num_layers)
            )
            for _ in self.task.eval_splits
        )
        self.eval_scores: dict[str, dict[str, list[float]]] = {}
        per_class_splits = () if self.task.is_regression else self.task.eval_splits
        self.confusion = nn.ModuleList(MulticlassConfusionMatrix(self.task.num_outputs) for _ in per_class_splits)
        self.eval_confusion: dict[str, list[list[int]]] = {}
        self._prototype_batches: list[tuple[torch.Tensor, torch.Tensor]] = []  # since the last optimizer step
        self._entered_stage: int | None = None
        self._stage_starts = [0]
        self._layer_cache: torch.Tensor | None = None  # [N, L, H] while a stage trains on cached layers

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> MultiExitModule:
        """Rebuild a trained module from a checkpoint file, in eval mode.

        The backbone is built with random weights, since the checkpoint overwrites them all;
        its config and tokenizer still come from the backbone's path.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise De3Error(f"checkpoint not found: {path}")
        try:
            hparams = torch.load(path, map_location=map_location, weights_only=True)["hyper_parameters"]
        except Exception as err:
            raise De3Error(f"{path} is not a de3 checkpoint ({err})") from None
        backbone = {**hparams["backbone"], "random_init": True}
        module = cls.load_from_checkpoint(path, map_location=map_location, backbone=backbone).eval()
        module.checkpoint_path = path
        return module

    def forward(self, batch: Mapping[str, torch.Tensor]) -> MultiExitOutput:
        """A tokenized batch → every exit's outputs."""
        return self.model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def stage_at(self, step: int) -> int:
        """The training scheme's stage (0-based) of optimizer step `step` (known once the
        optimizer is configured: the stages split the run's total steps)."""
        return bisect.bisect_right(self._stage_starts, max(step, 0)) - 1

    def on_fit_start(self) -> None:
        if self.loss_fn.stage1_ckpt and self.trainer.ckpt_path is None:  # a resumed run has its own weights
            self.load_stage_one(self.loss_fn.stage1_ckpt)

    def load_stage_one(self, path: str | Path) -> None:
        """Take the backbone and the final exit from the checkpoint of a finished stage 1."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise De3Error(f"loss.stage1_ckpt: no checkpoint file at {path}")
        saved = torch.load(path, map_location=self.device, weights_only=True)
        for part, key in (("task", "name"), ("backbone", "name"), ("backbone", "path"), ("exits", "pooling")):
            theirs, ours = saved["hyper_parameters"][part].get(key), self.hparams[part].get(key)
            if theirs != ours:
                raise De3Error(f"loss.stage1_ckpt {path} has {part}.{key}={theirs!r}, this run {ours!r}")
        prefixes = ("model.backbone.", f"model.exits.{self.model.num_layers - 1}.")
        weights = {name: value for name, value in saved["state_dict"].items() if name.startswith(prefixes)}
        missing = [name for name in self.state_dict() if name.startswith(prefixes) and name not in weights]
        if missing:
            raise De3Error(f"loss.stage1_ckpt {path} lacks {len(missing)} stage-1 weights, e.g. {missing[0]}")
        self.load_state_dict(weights, strict=False)
        log.info("stage 1 from %s: training stage 2 only", path)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        stage = self.stage_at(self.global_step)
        if stage != self._entered_stage:
            self.loss_fn.enter_stage(stage, self.model)
            self._entered_stage = stage
            self._layer_cache = None
            if self.loss_fn.trains_on_cached_layers(stage):
                loader = self.trainer.train_dataloader
                self._layer_cache = cache_pooled_layers(
                    self.model, loader.dataset, loader.collate_fn, loader.batch_size
                )
            if self.loss_fn.num_stages > 1:
                log.info("training stage %d of %d from step %d", stage + 1, self.loss_fn.num_stages, self.global_step)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        labels = batch["labels"]
        if self._layer_cache is None:
            output = self(batch)
        else:
            output = self.model.from_pooled(self._layer_cache[batch["index"]].transpose(0, 1))
        prototypes, stage = self.model.prototypes, self._entered_stage or 0
        if prototypes is not None and self.loss_fn.trains_prototypes(stage):
            # A class seen for the first time gets its prototype before DAR measures distances to it.
            if prototypes.update(output.mapped.detach(), labels, only_missing=True):
                output.distances = prototypes.distances(output.mapped)
            self._prototype_batches.append((output.mapped.detach(), labels))
        losses = self.loss_fn(output, labels, self.task.is_regression, stage)
        if not torch.isfinite(losses["loss"]):
            raise De3Error(self._nonfinite_loss_message(losses["loss"], batch_idx))
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(labels))
        if "dar" in losses:
            self.log("train/dar", losses["dar"].mean(), batch_size=len(labels))
        return losses["loss"]

    def _nonfinite_loss_message(self, loss: torch.Tensor, batch_idx: int) -> str:
        saved = [
            Path(path)
            for callback in self.trainer.checkpoint_callbacks
            for path in (callback.last_model_path, callback.best_model_path)
            if path and Path(path).is_file()
        ]
        last_good = str(max(saved, key=lambda p: p.stat().st_mtime)) if saved else ""
        return (
            f"training stopped: the loss is {loss.item()} at step {self.global_step} "
            f"(epoch {self.current_epoch}, batch {batch_idx}). Last good checkpoint: "
            + (f"{last_good} (continue with ckpt_path={last_good})" if last_good else "none saved yet")
            + ". Lower model.optimizer.lr, or check the data for extreme values."
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Once per optimizer step, its gradients complete: fold the class means of every batch
        it accumulated into the prototypes (one EMA update; the loss no longer reads them)."""
        if self._prototype_batches:
            mapped, labels = zip(*self._prototype_batches)
            self.model.prototypes.update(torch.cat(mapped, dim=1), torch.cat(labels))
            self._prototype_batches = []

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        # float32 whatever the trainer's precision: per-exit scores and the checkpoint choice then
        # agree with the sweep and the predictor, which run in float32 too
        with torch.autocast(self.device.type, enabled=False):
            logits = self(batch).logits
        predicted = predictions(logits, self.task.is_regression)  # [L, B]
        for exit_metrics, exit_predictions in zip(self.metrics[dataloader_idx], predicted):
            exit_metrics.update(exit_predictions, batch["labels"])
        if self.confusion:
            self.confusion[dataloader_idx].update(predicted[-1], batch["labels"])

    def on_validation_epoch_end(self) -> None:
        self.eval_scores = {}
        for split, split_metrics in zip(self.task.eval_splits, self.metrics):
            per_exit = [exit_metrics.compute() for exit_metrics in split_metrics]
            for exit_metrics in split_metrics:
                exit_metrics.reset()
            self.eval_scores[split] = {name: [float(scores[name]) for scores in per_exit] for name in self.task.metrics}
            for name, values in self.eval_scores[split].items():
                for layer, value in enumerate(values, start=1):
                    self.log(f"{split}/{name}/exit{layer}", value, sync_dist=True)  # equal on all ranks already
        self.eval_confusion = {}
        for split, confusion in zip(self.task.eval_splits, self.confusion):
            self.eval_confusion[split] = confusion.compute().tolist()
            confusion.reset()
        self.log("val_score", self.selection_score(), prog_bar=True, sync_dist=True)

    def selection_score(self) -> float:
        """What selects checkpoints: the main metric on the first eval split, averaged over all
        exits (every exit serves some inputs). −∞ before the last stage of a staged scheme, so
        that a model whose internal exits are not trained yet is never the one kept."""
        fitting = self.trainer.state.fn == TrainerFn.FITTING
        last_stage = self.loss_fn.num_stages - 1
        if fitting and last_stage > 0 and self.stage_at(self.global_step - 1) < last_stage:
            return float("-inf")
        return sum(self.eval_scores[self.task.eval_splits[0]][self.task.main_metric]) / self.model.num_layers

    def configure_optimizers(self) -> dict[str, Any]:
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        groups = [
            {
                "params": [p for n, p in named if not n.endswith(no_decay)],
                "weight_decay": self.hparams.optimizer["weight_decay"],
            },
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.optimizer["lr"])
        total_steps = int(self.trainer.estimated_stepping_batches)
        self._stage_starts = starts = stage_starts(self.loss_fn.stage_fractions, total_steps)
        scheduler = LambdaLR(
            optimizer, staged_linear_schedule(starts, total_steps, self.hparams.optimizer["warmup_ratio"])
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def staged_linear_schedule(starts: list[int], total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """The learning-rate factor at each step: within every stage (beginning at `starts`), linear
    warm-up over `warmup_ratio` of the stage's steps, then linear decay to 0 at its end."""

    def factor(step: int) -> float:
        stage = bisect.bisect_right(starts, step) - 1
        begin, end = starts[stage], starts[stage + 1] if stage + 1 < len(starts) else total_steps
        length, done = max(end - begin, 1), step - begin
        warmup = int(warmup_ratio * length)
        if done < warmup:
            return done / warmup
        return max(0.0, (length - done) / max(1, length - warmup))

    return factor
