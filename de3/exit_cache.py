"""One pass over an eval split that keeps every exit's outputs: what the sweep and the
prototype pictures are computed from, saved so anyone can re-simulate without the model."""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from de3.data.sampling import input_order
from de3.devices import resolve_precision
from de3.models.multi_exit import MultiExitModel
from de3.utils.io import atomic_path


@dataclass
class ExitCache:
    """Every exit's outputs for N samples: `logits` [L, N, C], `labels` [N] (None if unlabelled),
    `lengths` [N] (tokens, for FLOPs), and with prototypes `distances` [L−1, N, C] (and, when
    asked for, the mapped vectors `mapped` [L−1, N, d])."""

    logits: torch.Tensor
    labels: torch.Tensor | None
    lengths: torch.Tensor
    distances: torch.Tensor | None = None
    mapped: torch.Tensor | None = None

    @property
    def num_layers(self) -> int:
        return self.logits.shape[0]

    def to_dict(self) -> dict[str, torch.Tensor | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@torch.no_grad()
def collect_exit_cache(
    model: MultiExitModel,
    loader: DataLoader,
    keep_mapped: bool = False,
    description: str = "caching exit outputs",
    precision: str = "fp32",
) -> ExitCache:
    """Run `model` (in eval mode, not under autocast) over `loader` once and stack every exit's
    outputs on the CPU, in the order of the loader's dataset (also when its batches are sorted by
    length). `precision` is what real early exit will run in (`EarlyExitPredictor`): other than
    fp32, a copy of the model cast to it runs, so that thresholds chosen on this cache keep their
    meaning there."""
    was_training = model.training
    dtype = resolve_precision(precision)
    if dtype != next(model.parameters()).dtype:
        model = copy.deepcopy(model).to(dtype)
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {"logits": [], "labels": [], "lengths": [], "distances": [], "mapped": []}
    try:
        for batch in tqdm(loader, desc=description, leave=False):
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, enabled=False):
                output = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
            parts["logits"].append(output.logits.float().cpu())
            parts["lengths"].append(batch["attention_mask"].sum(1).cpu())
            if "labels" in batch:
                parts["labels"].append(batch["labels"].cpu())
            if output.distances is not None:
                parts["distances"].append(output.distances.float().cpu())
                if keep_mapped:
                    parts["mapped"].append(output.mapped.float().cpu())
    finally:
        model.train(was_training)

    order = input_order(loader)

    def cat(name: str, dim: int) -> torch.Tensor | None:
        if not parts[name]:
            return None
        stacked = torch.cat(parts[name], dim)
        return stacked if order is None else stacked.index_select(dim, order)

    return ExitCache(
        logits=cat("logits", 1),
        labels=cat("labels", 0),
        lengths=cat("lengths", 0),
        distances=cat("distances", 1),
        mapped=cat("mapped", 1),
    )


def save_exit_caches(path: str | Path, caches: dict[str, ExitCache]) -> Path:
    """Save {split: cache} to one `torch.load(weights_only=True)`-able file (mapped vectors dropped)."""
    with atomic_path(path) as tmp:
        torch.save({split: {**cache.to_dict(), "mapped": None} for split, cache in caches.items()}, tmp)
    return Path(path)


def load_exit_caches(path: str | Path) -> dict[str, ExitCache]:
    """The inverse of `save_exit_caches`."""
    return {split: ExitCache(**fields_) for split, fields_ in torch.load(path, weights_only=True).items()}
