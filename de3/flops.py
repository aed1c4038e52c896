"""FLOPs of a multi-exit model per sample, for the FLOPs-based speed-up (multiply-add = 2 FLOPs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class FlopsModel:
    """Per-sample costs: an encoder layer as a function of sequence length, an exit head,
    the prototype mapping + distances at an internal layer (0 without prototypes) and the
    bypass before an internal exit (0 without bypasses)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    exit_head: int
    prototype: int = 0
    bypass: int = 0

    @classmethod
    def of(cls, model: Any) -> FlopsModel:
        """The costs of a `MultiExitModel`."""
        return cls(
            hidden_size=model.backbone.hidden_size,
            intermediate_size=model.backbone.intermediate_size,
            num_layers=model.num_layers,
            exit_head=model.exits[0].flops(),
            prototype=0 if model.prototypes is None else model.prototypes.flops_per_layer(),
            bypass=0 if model.bypass is None else model.bypass.flops(),
        )

    def layer(self, lengths: torch.Tensor) -> torch.Tensor:
        """[N] token counts → [N] FLOPs of one encoder layer (projections, attention, FFN)."""
        t, h, i = lengths.double(), self.hidden_size, self.intermediate_size
        return 2 * t * (4 * h * h + 2 * h * i) + 4 * t * t * h

    def full_depth(self, lengths: torch.Tensor) -> torch.Tensor:
        """The ordinary model: every layer and the final classifier only."""
        return self.num_layers * self.layer(lengths) + self.exit_head

    def early_exit(self, exit_layers: torch.Tensor, lengths: torch.Tensor, uses_prototypes: bool) -> torch.Tensor:
        """Exiting at layer m (1-based): m layers, m exit heads, a bypass before every internal
        exit passed, and with a distance-based rule the prototype work at those exits too."""
        m = exit_layers.double()
        internal = m.clamp(max=self.num_layers - 1)
        per_internal = self.bypass + (self.prototype if uses_prototypes else 0)
        return m * self.layer(lengths) + m * self.exit_head + internal * per_internal

    def speedup(self, exit_layers: torch.Tensor, lengths: torch.Tensor, uses_prototypes: bool) -> float:
        """Σ full-depth FLOPs / Σ early-exit FLOPs over the samples."""
        return float(self.full_depth(lengths).sum() / self.early_exit(exit_layers, lengths, uses_prototypes).sum())


def layer_speedup(exit_layers: torch.Tensor, num_layers: int) -> float:
    """The speed-up ratio: L·N / Σᵢ mᵢ, mᵢ the 1-based exit layer of sample i."""
    return num_layers * len(exit_layers) / float(exit_layers.sum())


def cost_markdown(model: Any, tokens: float) -> str:
    """A markdown table of what a `MultiExitModel` adds to its backbone: parameters, and FLOPs
    per sample where each part runs, beside one encoder layer at `tokens` tokens."""
    costs = FlopsModel.of(model)

    def count(module: Any) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    layer = float(costs.layer(torch.tensor([tokens])))
    rows = [
        ("backbone", count(model.backbone), f"{layer:,.0f} per layer ({tokens:.0f} tokens)"),
        ("exit heads", count(model.exits), f"{costs.exit_head:,} per exit"),
    ]
    if model.prototypes is not None:
        rows.append(("prototypes (mapping)", count(model.prototypes), f"{costs.prototype:,} per internal exit"))
    if model.bypass is not None:
        rows.append(("bypasses", count(model.bypass), f"{costs.bypass:,} per internal exit"))
    lines = ["| part | parameters | FLOPs per sample |", "|---|---:|---:|"]
    lines += [f"| {name} | {params:,} | {flops} |" for name, params, flops in rows]
    return "\n".join(lines) + "\n"
