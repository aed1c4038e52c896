"""Shared fixtures: fake GLUE files, the composed real config shrunk for tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

import de3  # noqa: F401  (registers resolvers)
from de3.jobs import build_datamodule
from de3.models.backbone import load_encoder, load_tokenizer
from de3.models.char_tokenizer import bert_char_tokenizer
from tests.glue_fixtures import write_glue

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GLUE_DIR = SHARED / "data" / "glue"
MINILM_DIR = SHARED / "models" / "all-MiniLM-L6-v2"

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: a thread per worker (and its subprocesses), not 2 each
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# The fake GLUE files hold 24 training rows, too few for the default calibration split (at least
# 300 rows): tests run without one unless they ask for it (tests/test_calibration.py does).
NO_CALIBRATION = "task.calibration_fraction=null"

needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"real GLUE data not found at {GLUE_DIR}")
needs_minilm = pytest.mark.skipif(not MINILM_DIR.is_dir(), reason=f"all-MiniLM-L6-v2 not found at {MINILM_DIR}")


def tiny_bert_encoder():
    """(character tokenizer, random 2-layer BERT with hidden size 32), as `backbone=tiny_bert` builds them."""
    tokenizer = load_tokenizer("tiny", model_type="bert")
    overrides = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    return tokenizer, load_encoder(
        "tiny", model_type="bert", random_init=True, tokenizer=tokenizer, config_overrides=overrides
    )


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="session")
def char_tokenizer():
    return bert_char_tokenizer()


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The real `conf/config.yaml` composed with `overrides` (calibration split off unless they
    set it), its Hydra output dir set to `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[NO_CALIBRATION, *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def tiny_overrides(glue_dir: Path) -> list[str]:
    """The real config shrunk: fake GLUE, tiny_bert, a few CPU steps, csv logger."""
    return [
        "backbone=tiny_bert",
        "debug=fast",
        f"data.data_dir={glue_dir}",
        "data.batch_size=8",
        "callbacks.progress_bar=null",
    ]


@pytest.fixture
def tiny_config(tmp_path: Path, glue_dir: Path):
    """A function: overrides → the real config, shrunk (`tiny_overrides`), writing to tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_config([*tiny_overrides(glue_dir), *overrides], tmp_path)

    yield make
    GlobalHydra.instance().clear()


def trained_weights(cfg: DictConfig, max_steps: int) -> dict[str, torch.Tensor]:
    """`cfg.model`'s parameters after `max_steps` optimizer steps from seed 0 (no validation,
    no gradient clipping)."""
    L.seed_everything(0)
    module = instantiate(cfg.model)
    datamodule = build_datamodule(cfg, module.task, module.tokenizer, "fit")
    trainer = L.Trainer(
        max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0
    )
    trainer.fit(module, datamodule)
    return {name: p.detach().clone() for name, p in module.model.named_parameters()}


def run_cli(
    *args: str, cwd: Path, glue_dir: Path, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python run.py *args` as a user runs it, logs under `cwd`, on the fake GLUE files (with no
    calibration split: the fake files are too small)."""
    # WANDB_SERVICE: set once this test process has started W&B; inherited, it would make the child
    # share this process's W&B service, which keeps a SIGKILLed child's run id "in use"
    inherited = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env = {**inherited, "DE3_GLUE_DIR": str(glue_dir), "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "run.py"), *args, NO_CALIBRATION, f"paths.log_dir={cwd}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
