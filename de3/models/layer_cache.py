"""Stage 2 of a two-stage scheme from cached layer outputs.

Once the backbone is frozen, every training example's pooled layer outputs (what the exits,
their bypasses and the prototype mappings read) no longer change: they are computed in one
pass over the training set and the internal exits then train on them, without running the
backbone again. The pass runs the backbone in eval mode, so stage 2 sees the backbone without
dropout (the trained heads keep theirs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from de3.data.sampling import LengthSortedSampler, input_order
from de3.models.multi_exit import MultiExitModel


@torch.no_grad()
def cache_pooled_layers(
    model: MultiExitModel, features: Sequence[dict[str, Any]], collate: Callable, batch_size: int
) -> torch.Tensor:
    """[N, L, H] pooled outputs of every layer for the N tokenized `features` (in their order),
    computed in length-sorted batches with the backbone in eval mode, kept on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sampler = LengthSortedSampler([len(f["input_ids"]) for f in features])
    loader = DataLoader(features, batch_size=batch_size, sampler=sampler, collate_fn=collate)
    parts = []
    try:
        for batch in tqdm(loader, desc="caching layer outputs for stage 2", leave=False):
            batch = {k: v.to(device) for k, v in batch.items()}
            pooled = model.pooled_layers(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
            parts.append(pooled.transpose(0, 1))
    finally:
        model.train(was_training)
    return torch.cat(parts).index_select(0, input_order(loader).to(device))
