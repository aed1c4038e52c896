"""Where a result came from: the code's git commit."""

from __future__ import annotations

import subprocess

from de3.utils.config import REPO_ROOT


def git_commit() -> str | None:
    """The repository's HEAD commit, with "-dirty" when tracked files have uncommitted changes;
    None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}-dirty" if dirty else head
