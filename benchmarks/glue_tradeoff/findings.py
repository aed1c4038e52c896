"""findings.md, the hand-written reading of the tables that RESULTS.md carries above them, and the
check that every number it quotes is in a table."""

from __future__ import annotations

import re
from pathlib import Path

FINDINGS = Path(__file__).resolve().parent / "findings.md"
NUMBER = re.compile(r"\d+\.\d+")  # how findings.md quotes a table's cell


def findings_lines() -> list[str]:
    """findings.md's text as RESULTS.md's lines above the tables; none without the file."""
    return [FINDINGS.read_text().strip(), ""] if FINDINGS.is_file() else []


def numbers_not_in_tables(findings: str, results: str) -> list[str]:
    """The decimal numbers `findings` quotes that appear nowhere else in `results` (RESULTS.md,
    which carries the findings above its tables): what the reading says beyond the tables, or
    what went stale when they were regenerated."""
    tables = results.replace(findings.strip(), "")
    return sorted(set(NUMBER.findall(findings)) - set(NUMBER.findall(tables)), key=float)


def stale_findings(results: str) -> str | None:
    """A line naming the numbers findings.md quotes that no table of `results` has; None when it
    quotes none (or there is no findings.md)."""
    if FINDINGS.is_file() and (unquoted := numbers_not_in_tables(FINDINGS.read_text(), results)):
        return f"{FINDINGS.name} quotes numbers no table has (stale, or beyond the tables): {', '.join(unquoted)}"
    return None
