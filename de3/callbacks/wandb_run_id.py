"""The W&B run id travels inside checkpoints, so a resumed run continues the same W&B run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

CHECKPOINT_KEY = "wandb_run_id"


class StoreWandbRunId(L.Callback):
    """Writes the run's W&B id into every checkpoint (nothing without a W&B logger)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                checkpoint[CHECKPOINT_KEY] = logger.version


def stored_wandb_run_id(checkpoint_path: str | Path) -> str | None:
    """The W&B run id saved in a checkpoint by `StoreWandbRunId`, if any."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    return checkpoint.get(CHECKPOINT_KEY)
