"""Randomness that depends on (seed, epoch) only, so that a resumed run repeats exactly what
an uninterrupted one does (with `EpochShuffleSampler` giving the batch order)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class EpochSeed(L.Callback):
    """Reseeds torch's generator (dropout) from `seed` and the epoch at each epoch's first batch.

    Resuming from a checkpoint restarts at an epoch boundary; without this, dropout would draw
    from wherever the generator happened to be after `seed_everything` in the new process.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            torch.manual_seed(self.seed * 1_000_003 + trainer.current_epoch)
