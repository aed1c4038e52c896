"""OmegaConf resolvers used by the configs in `conf/`."""

from pathlib import Path

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[2]


def register_resolvers() -> None:
    """Register `${de3_root:}` (the repository root) once per process."""
    if not OmegaConf.has_resolver("de3_root"):
        OmegaConf.register_new_resolver("de3_root", lambda: str(REPO_ROOT))
