"""The multi-exit network: a backbone with an exit head after every layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from de3.errors import De3Error
from de3.models.backbone import EncoderBackbone
from de3.models.exits import POOLINGS, ExitHead, pool


@dataclass
class MultiExitOutput:
    """Per-exit outputs for a batch: `logits` [L, B, C] and the pooled vectors `pooled` [L, B, H]."""

    logits: torch.Tensor
    pooled: torch.Tensor


class MultiExitModel(nn.Module):
    """Backbone + L exit heads; exit m reads layer m's pooled representation.

    `forward` runs every layer (training, caching for the sweep); `exit_logits` is the piece
    that layer-by-layer early-exit inference calls after each layer.
    """

    def __init__(self, backbone: EncoderBackbone, num_outputs: int, pooling: str = "cls", dropout: float = 0.1) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise De3Error(f"exit pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.exits = nn.ModuleList(
            ExitHead(backbone.hidden_size, num_outputs, dropout) for _ in range(backbone.num_layers)
        )

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def exit_logits(self, index: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exit `index` (0-based) on layer output [B, T, H] → (logits [B, C], pooled [B, H])."""
        pooled = pool(hidden, attention_mask, self.pooling)
        return self.exits[index](pooled), pooled

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> MultiExitOutput:
        states = self.backbone(input_ids, attention_mask, token_type_ids)
        logits, pooled = zip(*(self.exit_logits(m, h, attention_mask) for m, h in enumerate(states)))
        return MultiExitOutput(logits=torch.stack(logits), pooled=torch.stack(pooled))
