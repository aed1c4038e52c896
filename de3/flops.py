"""FLOPs of a multi-exit model per sample, for the FLOPs-based speed-up (multiply-add = 2 FLOPs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FlopsModel:
    """Per-sample costs: an encoder layer as a function of sequence length, an exit head,
    and the prototype mapping + distances at an internal layer (0 without prototypes)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    exit_head: int
    prototype: int = 0

    def layer(self, lengths: torch.Tensor) -> torch.Tensor:
        """[N] token counts → [N] FLOPs of one encoder layer (projections, attention, FFN)."""
        t, h, i = lengths.double(), self.hidden_size, self.intermediate_size
        return 2 * t * (4 * h * h + 2 * h * i) + 4 * t * t * h

    def full_depth(self, lengths: torch.Tensor) -> torch.Tensor:
        """The ordinary model: every layer and the final classifier only."""
        return self.num_layers * self.layer(lengths) + self.exit_head

    def early_exit(self, exit_layers: torch.Tensor, lengths: torch.Tensor, uses_prototypes: bool) -> torch.Tensor:
        """Exiting at layer m (1-based): m layers, m exit heads, and with a distance-based rule
        the prototype work at every internal layer passed."""
        m = exit_layers.double()
        internal = m.clamp(max=self.num_layers - 1) if uses_prototypes else torch.zeros_like(m)
        return m * self.layer(lengths) + m * self.exit_head + internal * self.prototype

    def speedup(self, exit_layers: torch.Tensor, lengths: torch.Tensor, uses_prototypes: bool) -> float:
        """Σ full-depth FLOPs / Σ early-exit FLOPs over the samples."""
        return float(self.full_depth(lengths).sum() / self.early_exit(exit_layers, lengths, uses_prototypes).sum())


def layer_speedup(exit_layers: torch.Tensor, num_layers: int) -> float:
    """The speed-up ratio: L·N / Σᵢ mᵢ, mᵢ the 1-based exit layer of sample i."""
    return num_layers * len(exit_layers) / float(exit_layers.sum())
