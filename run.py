"""Hydra entry point: `python run.py task=sst2 backbone=minilm` (see conf/ for every option)."""

import logging
import sys

import hydra
from omegaconf import DictConfig

import de3  # noqa: F401  (registers the config resolvers)
from de3.errors import find_user_error

log = logging.getLogger("de3")


def _finish_wandb(failed: bool) -> None:
    """Close the W&B run of this job, so the next job of a multirun starts a fresh one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    failed = True
    try:
        from de3.jobs import run  # PyTorch and Lightning load only once Hydra accepted the command line

        score = run(cfg)
        failed = False
        return score
    except Exception as err:
        user_error = find_user_error(err)
        if user_error is None:
            raise
        log.error("%s", user_error)
        sys.exit(2)
    finally:
        _finish_wandb(failed)


if __name__ == "__main__":
    main()
