"""Callbacks that break a run on purpose, for the fault tests (added with `+callbacks.<name>=...`)."""

import os
import signal

import lightning as L
import torch


class KillAtStep(L.Callback):
    """SIGKILLs its own process just before optimizer step `step`, as a preempted job dies."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class PoisonWeightsAtStep(L.Callback):
    """Fills one weight matrix with NaN just before optimizer step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.exits[-1].classifier.weight.fill_(float("nan"))
