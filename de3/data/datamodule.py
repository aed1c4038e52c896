"""One LightningDataModule for every task: tokenized examples in dynamically padded batches."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Sampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from de3.data.sampling import EpochShuffleSampler, LengthGroupedSampler, LengthSortedSampler
from de3.data.sources import Example
from de3.data.splits import load_splits
from de3.data.tasks import TaskSpec
from de3.errors import De3Error

log = logging.getLogger(__name__)


def seeded_subset(examples: Sequence[Example], limit: int | None, seed: int) -> list[Example]:
    """At most `limit` examples, drawn without replacement by `seed`, in their original order."""
    if limit is None or limit >= len(examples):
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


class TextTaskDataModule(L.LightningDataModule):
    """Serves a task's train split, its labelled eval splits (a list of loaders, in
    `task.eval_splits` order) and its unlabelled test splits (for prediction).

    Batches hold `input_ids`, `attention_mask` (and `token_type_ids` where the tokenizer
    makes them), padded to the longest sequence in the batch, plus `labels` when labelled.
    Training batches are grouped by length when `group_by_length` (see `de3.data.sampling`);
    evaluation batches are sorted by length (`collect_exit_cache` restores input order).
    """

    def __init__(
        self,
        task: TaskSpec,
        tokenizer: PreTrainedTokenizerBase,
        data_dir: str | Path | None = None,
        source: str = "auto",
        max_seq_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        train_limit: int | None = None,
        eval_limit: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        group_by_length: bool = True,
    ) -> None:
        super().__init__()
        self.task = task
        self.tokenizer = tokenizer
        self.data_dir = data_dir
        self.source = source
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        for name, limit in (("train_limit", train_limit), ("eval_limit", eval_limit)):
            if limit is not None and limit < 1:
                raise De3Error(f"data.{name}={limit} would leave no examples: give a positive count, or null for all")
        self.train_limit = train_limit
        self.eval_limit = eval_limit
        self.num_workers = num_workers
        self.seed = seed
        self.group_by_length = group_by_length
        self.collate = DataCollatorWithPadding(tokenizer)
        self.datasets: dict[str, list[dict[str, Any]]] = {}
        self.origins: dict[str, list[str]] = {}  # each split's examples' `where`, as served

    def encode(self, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """Tokenize examples (truncated to `max_seq_length`) into per-example feature dicts."""
        columns = list(zip(*(e.texts for e in examples)))
        encoded = self.tokenizer(*(list(c) for c in columns), truncation=True, max_length=self.max_seq_length)
        features = [{key: encoded[key][i] for key in encoded} for i in range(len(examples))]
        truncated = sum(len(f["input_ids"]) >= self.max_seq_length for f in features)
        if truncated:
            log.info(
                "%d of %d examples reach max_seq_length=%d (longer ones were truncated)",
                truncated,
                len(examples),
                self.max_seq_length,
            )
        for feature, example in zip(features, examples):
            if example.label is not None:
                feature["labels"] = example.label
        return features

    def _load(self, limits: dict[str, int | None]) -> None:
        """Load, subset and encode the splits named in `limits` (split → example limit) not loaded yet."""
        splits = [split for split in limits if split not in self.datasets]
        for split, examples in load_splits(self.task, splits, self.data_dir, self.source).items():
            examples = seeded_subset(examples, limits[split], self.seed)
            self.datasets[split] = self.encode(examples)
            self.origins[split] = [example.where for example in examples]
            for position, feature in enumerate(self.datasets[split]):
                feature["index"] = position  # batches name their examples (stage 2 reads cached layer outputs by it)
            log.info("%s/%s: %d examples", self.task.name, split, len(self.datasets[split]))

    def setup(self, stage: str | None = None) -> None:
        limits: dict[str, int | None] = {}
        if stage in ("fit", None):
            limits["train"] = self.train_limit
        if stage in ("fit", "validate", None):
            limits.update(dict.fromkeys(self.task.eval_splits, self.eval_limit))
        if stage == "predict":
            limits.update(dict.fromkeys(self.task.test_splits, self.eval_limit))
        self._load(limits)

    def _loader(self, split: str, sampler: Sampler | None = None, limit: int | None = None) -> DataLoader:
        train = split == "train"
        return DataLoader(
            self.datasets[split][:limit],
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _lengths(self, split: str) -> list[int]:
        return [len(feature["input_ids"]) for feature in self.datasets[split]]

    def train_dataloader(self) -> DataLoader:
        if self.group_by_length:
            return self._loader("train", LengthGroupedSampler(self._lengths("train"), self.batch_size, self.seed))
        return self._loader("train", EpochShuffleSampler(len(self.datasets["train"]), self.seed))

    def _sorted_loader(self, split: str, limit: int | None = None) -> DataLoader:
        return self._loader(split, LengthSortedSampler(self._lengths(split)[:limit]), limit)

    def val_dataloader(self) -> list[DataLoader]:
        """Under DDP each rank scores its own share of every eval split, without the padded
        duplicates of Lightning's default sampler, so per-exit scores equal a single process's."""
        distributed = dist.is_available() and dist.is_initialized()
        return [
            self._loader(split, UnrepeatedDistributedSampler(self.datasets[split], shuffle=False))
            if distributed
            else self._sorted_loader(split)
            for split in self.task.eval_splits
        ]

    def whole_eval_dataloaders(self, limit: int | None = None) -> list[DataLoader]:
        """Every eval split whole (or its first `limit` examples), whatever the process group:
        for the sweep on rank 0."""
        return [self._sorted_loader(split, limit) for split in self.task.eval_splits]

    def predict_dataloader(self) -> list[DataLoader]:
        return [self._loader(split) for split in self.task.test_splits]
