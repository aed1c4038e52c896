"""Result files: written atomically, readable by others as `open(path, "w")` would leave them."""

import os
import stat

import pytest
import torch

from de3.exit_cache import ExitCache, save_exit_caches
from de3.results import save_results
from de3.utils.io import write_text_atomic


@pytest.fixture
def umask():
    """A function setting the process's umask for the test; the old one comes back after it."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_result_files_respect_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    write_text_atomic(tmp_path / "summary.md", "# sweep\n")
    save_results(tmp_path, {"validation": {"accuracy": [0.5, 0.75]}}, "title", {"task": "rte"})
    cache = ExitCache(logits=torch.zeros(2, 3, 2), labels=torch.zeros(3, dtype=torch.long), lengths=torch.ones(3))
    save_exit_caches(tmp_path / "exit_cache.pt", {"validation": cache})
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["exit_cache.pt", "results.json", "results.md", "summary.md"]  # no temporary left
    assert {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in written} == dict.fromkeys(written, mode)
