"""Prototypical networks on the internal layers (DE³-BERT steps 2–4).

Each internal layer m < L maps its pooled vector into a metric space, g_m(h) = W_m h + b_m,
where every class k has a prototype cp_k⁽ᵐ⁾: a buffer (saved in checkpoints, never trained by
gradients) kept as an EMA of the class means of mapped training samples.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def euclidean_distances(mapped: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """[..., B, d] samples and [..., C, d] prototypes → [..., B, C] Euclidean distances.

    The square root is taken of a clamped square so gradients stay finite at distance 0.
    """
    squared = (mapped.unsqueeze(-2) - prototypes.unsqueeze(-3)).pow(2).sum(-1)
    return squared.clamp(min=1e-12).sqrt()


def dar_loss(distances: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Distance-aware regularization per layer: −log softmax(−d/τ)[y], averaged over the batch.

    [L−1, B, C] distances (∞ for classes with no prototype yet) and [B] labels → [L−1].
    """
    num_layers, batch, num_classes = distances.shape
    flat = F.cross_entropy((-distances / tau).flatten(0, 1), labels.repeat(num_layers), reduction="none")
    return flat.view(num_layers, batch).mean(1)


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


class PrototypicalNetworks(nn.Module):
    """Mapping layers g_m and class prototypes for `num_layers` internal layers.

    `prototypes` [M, C, d] and `initialized` [M, C] are buffers. `update` folds in a batch's
    class means with rate `gamma` (initialising a class from the first batch that contains it),
    after summing the per-class sums and counts over all DDP ranks, so every rank ends with the
    same prototypes.
    """

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        num_classes: int,
        dim: int | None = None,
        gamma: float = 0.1,
        detach_backbone: bool = False,
    ) -> None:
        super().__init__()
        dim = dim or hidden_size
        self.gamma = gamma
        self.detach_backbone = detach_backbone
        self.mappings = nn.ModuleList(nn.Linear(hidden_size, dim) for _ in range(num_layers))
        self.register_buffer("prototypes", torch.zeros(num_layers, num_classes, dim))
        self.register_buffer("initialized", torch.zeros(num_layers, num_classes, dtype=torch.bool))

    @property
    def dim(self) -> int:
        return self.prototypes.shape[-1]

    def map_layer(self, index: int, pooled: torch.Tensor) -> torch.Tensor:
        """g_m for internal layer `index` (0-based): [B, H] → [B, d]."""
        return self.mappings[index](pooled.detach() if self.detach_backbone else pooled)

    def map(self, pooled: torch.Tensor) -> torch.Tensor:
        """All internal layers: [M, B, H] → [M, B, d]."""
        return torch.stack([self.map_layer(m, h) for m, h in enumerate(pooled)])

    def layer_distances(self, index: int, mapped: torch.Tensor) -> torch.Tensor:
        """[B, d] → [B, C] distances to layer `index`'s prototypes (∞ where none exists yet)."""
        distances = euclidean_distances(mapped.float(), self.prototypes[index])
        return torch.where(self.initialized[index], distances, float("inf"))

    def distances(self, mapped: torch.Tensor) -> torch.Tensor:
        """[M, B, d] → [M, B, C]."""
        distances = euclidean_distances(mapped.float(), self.prototypes)
        return distances.masked_fill(~self.initialized.unsqueeze(1), float("inf"))

    @torch.no_grad()
    def update(self, mapped: torch.Tensor, labels: torch.Tensor, only_missing: bool = False) -> bool:
        """Fold a batch into the prototypes: cp ← (1 − γ)·cp + γ·mean{g_m(h_i) : y_i = k}.

        `mapped` [M, B, d] (detached), `labels` [B]. With `only_missing`, only classes without a
        prototype are set (to their batch mean). Returns whether any prototype changed.
        """
        one_hot = F.one_hot(labels, self.prototypes.shape[1]).to(torch.float32)  # [B, C]
        sums = _all_reduce(torch.einsum("mbd,bc->mcd", mapped.float(), one_hot))  # [M, C, d]
        counts = _all_reduce(one_hot.sum(0))  # [C]
        present = (counts > 0).expand_as(self.initialized)  # [M, C]
        means = sums / counts.clamp(min=1.0)[None, :, None]
        blended = torch.where(
            self.initialized.unsqueeze(-1), (1 - self.gamma) * self.prototypes + self.gamma * means, means
        )
        change = present & ~self.initialized if only_missing else present
        self.prototypes.copy_(torch.where(change.unsqueeze(-1), blended, self.prototypes))
        self.initialized |= change
        return bool(change.any())

    def flops_per_layer(self) -> int:
        """FLOPs for one sample at one internal layer: the mapping and C distances."""
        hidden, dim = self.mappings[0].in_features, self.dim
        return 2 * hidden * dim + 3 * self.prototypes.shape[1] * dim
