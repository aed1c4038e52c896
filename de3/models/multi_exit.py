"""The multi-exit network: a backbone with an exit head after every layer, and optionally
prototypical networks on the internal layers (DE³) and block-wise bypasses before the
internal exits (BADGE). Both are switches on the one model, and combine."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from de3.errors import De3Error
from de3.models.backbone import EncoderBackbone
from de3.models.bypass import BlockBypasses
from de3.models.exits import POOLINGS, ExitHead, pool
from de3.models.prototypes import PrototypicalNetworks

log = logging.getLogger(__name__)


@dataclass
class MultiExitOutput:
    """Per-exit outputs for a batch.

    `logits` [L, B, C]; `pooled` [L, B, H]; with prototypes, the internal layers' mapped
    vectors `mapped` [L−1, B, d] and their prototype `distances` [L−1, B, C].
    """

    logits: torch.Tensor
    pooled: torch.Tensor
    mapped: torch.Tensor | None = None
    distances: torch.Tensor | None = None


class MultiExitModel(nn.Module):
    """Backbone + L exit heads; exit m reads layer m's pooled representation.

    `forward` runs every layer (training, caching for the sweep); `exit_logits` is the piece
    that layer-by-layer early-exit inference calls after each layer. `prototypes` is None
    unless the model was built with `prototypes` settings (DE³); `bypass` is None unless
    built with `bypass` settings whose `enabled` is true (BADGE). With `init_from_pooler`, every
    exit's dense layer starts as the backbone's trained pooler, where it has one and the exits
    read the first token as that pooler did (`pooling="cls"`).
    """

    def __init__(
        self,
        backbone: EncoderBackbone,
        num_outputs: int,
        pooling: str = "cls",
        dropout: float = 0.1,
        prototypes: dict | None = None,
        bypass: dict | None = None,
        init_from_pooler: bool = True,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise De3Error(f"exit pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.exits = nn.ModuleList(
            ExitHead(backbone.hidden_size, num_outputs, dropout) for _ in range(backbone.num_layers)
        )
        if init_from_pooler and backbone.pretrained_pooler is not None:
            if pooling == "cls":
                for head in self.exits:  # as DeeBERT's highway exits start
                    head.dense.load_state_dict(backbone.pretrained_pooler.state_dict())
            else:
                log.info(
                    "exits start with random dense layers, not the pretrained pooler: it was trained on the "
                    "first token and the exits read the %s pooling",
                    pooling,
                )
        self.prototypes = (
            None
            if prototypes is None
            else PrototypicalNetworks(backbone.num_layers - 1, backbone.hidden_size, num_outputs, **prototypes)
        )
        bypass = dict(bypass or {})
        self.bypass = (
            BlockBypasses(backbone.num_layers - 1, backbone.hidden_size, **bypass)
            if bypass.pop("enabled", False)
            else None
        )

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def read(self, index: int, pooled: torch.Tensor) -> torch.Tensor:
        """What exit `index` (0-based) reads from its layer's pooled vector [B, H]: the vector
        itself, or its block's bypass of it for an internal exit when there are bypasses."""
        if self.bypass is not None and index < self.num_layers - 1:
            return self.bypass(index, pooled)
        return pooled

    def exit_logits(
        self, index: int, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exit `index` (0-based) on layer output [B, T, H] → (logits [B, C], the vector the exit
        read [B, H])."""
        read = self.read(index, pool(hidden, attention_mask, self.pooling))
        return self.exits[index](read), read

    def final_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Full depth without early exit: every layer, then the last exit only → [B, C]."""
        hidden = self.backbone(input_ids, attention_mask, token_type_ids)[-1]
        return self.exit_logits(self.num_layers - 1, hidden, attention_mask)[0]

    def pooled_layers(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Every layer's pooled output [L, B, H]: all the exits read (see `from_pooled`)."""
        states = self.backbone(input_ids, attention_mask, token_type_ids)
        return torch.stack([pool(hidden, attention_mask, self.pooling) for hidden in states])

    def from_pooled(self, pooled_layers: torch.Tensor) -> MultiExitOutput:
        """Every exit (and the prototypes) on the layers' pooled outputs [L, B, H]."""
        read = [self.read(m, pooled) for m, pooled in enumerate(pooled_layers)]
        logits = [exit_head(vector) for exit_head, vector in zip(self.exits, read)]
        output = MultiExitOutput(logits=torch.stack(logits), pooled=torch.stack(read))
        if self.prototypes is not None:
            output.mapped = self.prototypes.map(output.pooled[:-1])
            output.distances = self.prototypes.distances(output.mapped)
        return output

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> MultiExitOutput:
        return self.from_pooled(self.pooled_layers(input_ids, attention_mask, token_type_ids))
