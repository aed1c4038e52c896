"""README.md's copy of RESULTS.md's headline tables, between two markers."""

from __future__ import annotations

from de3.errors import De3Error
from de3.utils.config import REPO_ROOT

README = REPO_ROOT / "README.md"
README_TABLES = tuple(f"All methods at {target}× speed-up, calibrated" for target in (2.0, 3.0))
README_BEGIN = "<!-- glue_tradeoff tables: written by python -m benchmarks.glue_tradeoff.report -->"
README_END = "<!-- end of glue_tradeoff tables -->"


def readme_with_tables(readme: str, results: str) -> str:
    """`readme` with the block between its glue_tradeoff markers replaced by RESULTS.md's
    `README_TABLES` (as they are in `results`), so README never quotes a table by hand."""
    if README_BEGIN not in readme or README_END not in readme:
        raise De3Error(f"README.md has no '{README_BEGIN}' ... '{README_END}' block for the results tables")
    results_lines = results.splitlines()
    block = [README_BEGIN]
    for title in README_TABLES:
        start = results_lines.index(f"## {title}") + 2
        end = results_lines.index("", start)
        block += ["", f"{title} (RESULTS.md):", "", *results_lines[start:end]]
    head, rest = readme.split(README_BEGIN, 1)
    return head + "\n".join(block) + "\n" + README_END + rest.split(README_END, 1)[1]
