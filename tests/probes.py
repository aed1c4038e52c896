"""Callbacks for end-to-end tests, added to a run with `+callbacks.<name>._target_=tests.probes.<Class>`:
some break the run on purpose, one records what each DDP rank ends with."""

import os
import signal
from pathlib import Path

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


class SavePrototypesPerRank(L.Callback):
    """When training ends, each rank saves its prototype buffers to `<output_dir>/prototypes_rank<r>.pt`."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def on_train_end(self, trainer, pl_module) -> None:
        prototypes = pl_module.model.prototypes
        state = {"prototypes": prototypes.prototypes.clone(), "initialized": prototypes.initialized.clone()}
        torch.save(state, self.output_dir / f"prototypes_rank{trainer.global_rank}.pt")
