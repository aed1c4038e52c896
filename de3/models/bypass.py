"""BADGE's block-wise bypasses (DESIGN step 6a), in the form this project specifies.

Our interpretation (the paper gives no public code): the internal layers 1..L−1 are grouped
into blocks of `block_size` consecutive layers. Each block owns one light bottleneck module,
shared by the exits of its layers, that turns a layer's pooled vector p into what those exits
read:

    u = p + W_up · gelu(W_down · LayerNorm(p))        W_down: H → r,  W_up: r → H

W_up starts at zero, so training starts from the plain multi-exit model. The final exit
reads its layer directly: it stays the ordinary classifier, and full-depth inference costs
nothing extra. The bypass works on one pooled vector per sample, so its cost does not grow
with sequence length (`flops`).

Where the internal exits' gradients go is a switch, `detach_backbone`:
- false (default): the residual path `p + ...` passes every internal exit's gradient on to
  its layer and, through it, to every layer below. The bypass adds capacity each exit can
  fit, but the exits still pull on the backbone's layers, as in plain joint training.
- true: the gradient stops at the block boundary, the bypass's input `p`. Internal exits
  train only their heads and their block's bypass; the backbone's layers are trained by the
  final exit alone, so the internal exits cannot pull them towards their own needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from de3.errors import De3Error


class Bottleneck(nn.Module):
    """A residual bottleneck on [B, H] vectors: p + up(gelu(down(norm(p))))."""

    def __init__(self, hidden_size: int, rank: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.down = nn.Linear(hidden_size, rank)
        self.up = nn.Linear(rank, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled + self.up(F.gelu(self.down(self.norm(pooled))))


class BlockBypasses(nn.Module):
    """One `Bottleneck` per block of `block_size` internal layers (`num_internal` = L − 1);
    with `detach_backbone`, internal exits' gradients stop at the bypass's input."""

    def __init__(
        self,
        num_internal: int,
        hidden_size: int,
        block_size: int = 2,
        rank: int = 64,
        detach_backbone: bool = False,
    ) -> None:
        super().__init__()
        if block_size < 1 or rank < 1:
            raise De3Error(f"model.bypass: block_size and rank must be ≥ 1, got {block_size} and {rank}")
        self.num_internal = num_internal
        self.block_size = block_size
        self.detach_backbone = detach_backbone
        num_blocks = math.ceil(num_internal / block_size)
        self.blocks = nn.ModuleList(Bottleneck(hidden_size, rank) for _ in range(num_blocks))

    def block_of(self, index: int) -> int:
        """The block of internal layer `index` (0-based)."""
        return index // self.block_size

    def forward(self, index: int, pooled: torch.Tensor) -> torch.Tensor:
        """Internal layer `index`'s (0-based) pooled vector [B, H] → what its exit reads [B, H]."""
        return self.blocks[self.block_of(index)](pooled.detach() if self.detach_backbone else pooled)

    def flops(self) -> int:
        """FLOPs for one sample at one internal exit: the two projections (2·2·H·r), plus about
        8 per element of H for the LayerNorm and the residual add (GELU's r are not counted)."""
        block = self.blocks[0]
        hidden, rank = block.down.in_features, block.down.out_features
        return 4 * hidden * rank + 8 * hidden
