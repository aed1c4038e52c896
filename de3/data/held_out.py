"""Held-out splits cut from one labelled file: seeded, stratified by class (by quantile of the
target for regression), so that each split keeps the file's label mix."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence

QUANTILE_BINS = 10


def strata(labels: Sequence[int | float], regression: bool, bins: int = QUANTILE_BINS) -> list[int]:
    """The stratum of each label: its class, or for regression the quantile bin of its rank."""
    if not regression:
        return [int(label) for label in labels]
    order = sorted(range(len(labels)), key=labels.__getitem__)
    stratum = [0] * len(labels)
    for rank, index in enumerate(order):
        stratum[index] = rank * bins // len(labels)
    return stratum


def stratified_split(row_strata: Sequence[int], fractions: Mapping[str, float], seed: int) -> dict[str, list[int]]:
    """Row indices of each held-out split (and of "train", the rest), sorted.

    Within each stratum a permutation drawn from `seed` gives every held-out split
    round(fraction × stratum size) rows, in the order of `fractions`; the same seed gives the
    same split.
    """
    members: dict[int, list[int]] = defaultdict(list)
    for index, stratum in enumerate(row_strata):
        members[stratum].append(index)
    rng = random.Random(seed)
    parts: dict[str, list[int]] = {"train": [], **{name: [] for name in fractions}}
    for stratum in sorted(members):
        rows = members[stratum]
        rng.shuffle(rows)
        start = 0
        for name, fraction in fractions.items():
            count = round(fraction * len(rows))
            parts[name] += rows[start : start + count]
            start += count
        parts["train"] += rows[start:]
    return {name: sorted(rows) for name, rows in parts.items()}
