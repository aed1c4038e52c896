"""Exact duplicate texts inside the training split, and texts that the training split shares
with the splits it is scored on (leakage): found, logged with examples, optionally dropped."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from de3.data.sources import Example

log = logging.getLogger(__name__)

SHOWN = 3  # examples quoted per finding


@dataclass(frozen=True)
class Overlap:
    """`repeats`: (train example, the earlier train example with the same texts).
    `leaks[split]`: (train example, the example of `split` with the same texts)."""

    repeats: list[tuple[Example, Example]]
    leaks: dict[str, list[tuple[Example, Example]]]

    def dropped(self) -> set[str]:
        """The `where` of every train example that deduplication drops."""
        return {pair[0].where for pairs in (self.repeats, *self.leaks.values()) for pair in pairs}


def find_overlap(train: Sequence[Example], others: Mapping[str, Sequence[Example]]) -> Overlap:
    """Exact repeats of texts within `train`, and `train` texts found in each of `others`."""
    first: dict[tuple[str, ...], Example] = {}
    repeats = []
    for example in train:
        if example.texts in first:
            repeats.append((example, first[example.texts]))
        else:
            first[example.texts] = example
    leaks = {}
    for split, examples in others.items():
        by_texts = {example.texts: example for example in examples}
        leaks[split] = [(example, by_texts[example.texts]) for example in train if example.texts in by_texts]
    return Overlap(repeats, leaks)


def _quote(pairs: Sequence[tuple[Example, Example]]) -> str:
    return "; ".join(f"{a.where} = {b.where} {' | '.join(a.texts)[:60]!r}" for a, b in pairs[:SHOWN])


def report_overlap(overlap: Overlap, deduplicate: bool) -> None:
    """Log the counts with a few examples, and what `task.deduplicate` does (or did) about them."""
    action = "dropped from train" if deduplicate else "kept (task.deduplicate=true drops them from train)"
    if overlap.repeats:
        log.warning(
            "train: %d row(s) repeat an earlier train text exactly, %s; e.g. %s",
            len(overlap.repeats),
            action,
            _quote(overlap.repeats),
        )
    for split, pairs in overlap.leaks.items():
        if pairs:
            log.warning(
                "leakage: %d train row(s) have a text that is also in %s (%d text(s)), %s; e.g. %s",
                len(pairs),
                split,
                len({b.texts for _, b in pairs}),
                action,
                _quote(pairs),
            )


def drop_overlap(train: Sequence[Example], overlap: Overlap) -> list[Example]:
    """`train` without its repeats and its leaked texts (the first of each repeated text stays,
    unless it leaks)."""
    dropped = overlap.dropped()
    return [example for example in train if example.where not in dropped]
