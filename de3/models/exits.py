"""Exit heads: what an exit reads from a layer (pooling) and how it turns that into logits."""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("cls", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, T, H] layer output → [B, H]: the first token ("cls") or the mask-aware token mean."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class ExitHead(nn.Module):
    """An internal classifier: pooler dense + tanh → dropout → linear, [B, H] → [B, C]."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_outputs)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.tanh(self.dense(pooled))))

    def flops(self) -> int:
        """Multiply-adds ×2 for one sample (the pooling itself is not counted)."""
        return 2 * (
            self.dense.in_features * self.dense.out_features
            + self.classifier.in_features * self.classifier.out_features
        )
