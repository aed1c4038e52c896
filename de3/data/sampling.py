"""The order examples are served in.

Training: a function of (seed, epoch) only, so that a run resumed from a checkpoint sees the
same batches as one that was never interrupted; by default grouped by length (as Hugging Face
Trainer's `group_by_length`) so that a padded batch wastes little compute on padding.
Evaluation: sorted by length; whoever stacks the outputs puts them back in input order with
`input_order`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of `num_samples` indices, drawn from `seed` and the epoch that
    Lightning passes to `set_epoch` before each training epoch."""

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def permutation(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        yield from self.permutation()


class LengthGroupedSampler(EpochShuffleSampler):
    """`EpochShuffleSampler`'s permutation cut into mega-batches of `mega_batch_factor ×
    batch_size` indices, each sorted by length (longest first, ties in shuffled order): the
    consecutive batches cut from it hold examples of similar length, and still change from
    epoch to epoch by (seed, epoch) alone."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, mega_batch_factor: int = 50) -> None:
        super().__init__(len(lengths), seed)
        self.lengths = list(lengths)
        self.mega_batch_size = max(1, mega_batch_factor * batch_size)

    def __iter__(self) -> Iterator[int]:
        shuffled = self.permutation()
        for start in range(0, len(shuffled), self.mega_batch_size):
            mega_batch = shuffled[start : start + self.mega_batch_size]
            yield from sorted(mega_batch, key=lambda i: -self.lengths[i])


class LengthSortedSampler(Sampler[int]):
    """Every index once, longest example first (ties in input order): evaluation batches with
    little padding. `input_order` undoes it."""

    def __init__(self, lengths: Sequence[int]) -> None:
        self.order = sorted(range(len(lengths)), key=lambda i: -lengths[i])

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        yield from self.order


def input_order(loader: DataLoader) -> torch.Tensor | None:
    """The positions that put the stacked outputs of one pass over `loader` back in input
    order, or None when the loader serves its examples in order already."""
    if not isinstance(loader.sampler, LengthSortedSampler):
        return None
    return torch.tensor(loader.sampler.order).argsort()
