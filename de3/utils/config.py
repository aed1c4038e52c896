"""OmegaConf resolvers used by the configs in `conf/`."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_group(single_run_group: str) -> str:
    """The W&B group: in a multirun, one group for all its jobs, named after the multirun's
    folder; otherwise `single_run_group`."""
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        if hydra.mode == RunMode.MULTIRUN and hydra.runtime.output_dir:
            return f"multirun-{Path(hydra.runtime.output_dir).parent.name}"
    return single_run_group


def job_name(base: str) -> str:
    """A run's name: `base`, plus the job's command-line overrides when there are any."""
    overrides = HydraConfig.get().job.override_dirname if HydraConfig.initialized() else ""
    return f"{base} [{overrides}]" if overrides else base


def register_resolvers() -> None:
    """Register `${de3_root:}` (the repository root), `${de3_run_group:...}` and
    `${de3_job_name:...}` once per process."""
    for name, resolver in (
        ("de3_root", lambda: str(REPO_ROOT)),
        ("de3_run_group", run_group),
        ("de3_job_name", job_name),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
