"""FLOPs of a multi-exit model per sample, for the FLOPs-based speed-up (multiply-add = 2 FLOPs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LayerCost:
    """Multiply-adds of one encoder layer on a sample of t tokens (each family's formula is
    beside its adapter, `EncoderFamily.layer_costs`): `per_token`·t (projections, feed-forward,
    relative-position scores, convolution) + `per_pair` for every query-key pair attended (all
    t², or those at most `window` positions apart) + `fixed` (independent of t; counted per
    sample, as at batch size 1)."""

    per_token: int
    per_pair: int
    window: int | None = None
    fixed: int = 0

    def pairs(self, lengths: torch.Tensor) -> torch.Tensor:
        """[N] token counts → [N] query-key pairs attended."""
        t = lengths.double()
        if self.window is None:
            return t * t
        reach = (t - 1).clamp(min=0, max=self.window)
        return t + reach * (2 * t - reach - 1)  # t + 2·Σ_{d=1..reach} (t − d)

    def flops(self, lengths: torch.Tensor) -> torch.Tensor:
        """[N] token counts → [N] FLOPs of this layer."""
        return 2 * (self.per_token * lengths.double() + self.per_pair * self.pairs(lengths) + self.fixed)


@dataclass(frozen=True)
class FlopsModel:
    """Per-sample costs: each encoder layer (`LayerCost`, in order), an exit head, the
    prototype mapping + distances at an internal layer (0 without prototypes) and the bypass
    before an internal exit (0 without bypasses). Embeddings are not counted: every sample
    runs them once, whatever its exit."""

    layers: tuple[LayerCost, ...]
    exit_head: int
    prototype: int = 0
    bypass: int = 0

    @classmethod
    def of(cls, model: Any) -> FlopsModel:
        """The costs of a `MultiExitModel`."""
        return cls(
            layers=tuple(model.backbone.layer_costs()),
            exit_head=model.exits[0].flops(),
            prototype=0 if model.prototypes is None else model.prototypes.flops_per_layer(),
            bypass=0 if model.bypass is None else model.bypass.flops(),
        )

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer_flops(self, lengths: torch.Tensor) -> torch.Tensor:
        """[N] token counts → [L, N] FLOPs of every encoder layer."""
        return torch.stack([layer.flops(lengths) for layer in self.layers])

    def full_depth(self, lengths: torch.Tensor) -> torch.Tensor:
        """The ordinary model: every layer and the final classifier only."""
        return self.layer_flops(lengths).sum(dim=0) + self.exit_head

    def early_exit(self, exit_layers: torch.Tensor, lengths: torch.Tensor, uses_prototypes: bool) -> torch.Tensor:
        """Exiting at layer m (1-based): layers 1..m, m exit heads, a bypass before every internal
        exit passed, and with a distance-based rule the prototype work at those exits too."""
        m = exit_layers.long()
        through = self.layer_flops(lengths).cumsum(dim=0).gather(0, (m - 1).unsqueeze(0))[0]
        internal = m.clamp(max=self.num_layers - 1).double()
        per_internal = self.bypass + (self.prototype if uses_prototypes else 0)
        return through + m.double() * self.exit_head + internal * per_internal

    def speedup(self, exit_layers: torch.Tensor, lengths: torch.Tensor, uses_prototypes: bool) -> float:
        """Σ full-depth FLOPs / Σ early-exit FLOPs over the samples."""
        return float(self.full_depth(lengths).sum() / self.early_exit(exit_layers, lengths, uses_prototypes).sum())


def layer_speedup(exit_layers: torch.Tensor, num_layers: int) -> float:
    """The speed-up ratio: L·N / Σᵢ mᵢ, mᵢ the 1-based exit layer of sample i."""
    return num_layers * len(exit_layers) / float(exit_layers.sum())


def cost_markdown(model: Any, tokens: float) -> str:
    """A markdown table of what a `MultiExitModel` adds to its backbone: parameters, and FLOPs
    per sample where each part runs, beside an encoder layer's (the range over the layers where
    they differ) at `tokens` tokens."""
    costs = FlopsModel.of(model)

    def count(module: Any) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    layers = costs.layer_flops(torch.tensor([tokens]))[:, 0]
    low, high = float(layers.min()), float(layers.max())
    per_layer = f"{low:,.0f}" if low == high else f"{low:,.0f}–{high:,.0f}"
    rows = [
        ("backbone", count(model.backbone), f"{per_layer} per layer ({tokens:.0f} tokens)"),
        ("exit heads", count(model.exits), f"{costs.exit_head:,} per exit"),
    ]
    if model.prototypes is not None:
        rows.append(("prototypes (mapping)", count(model.prototypes), f"{costs.prototype:,} per internal exit"))
    if model.bypass is not None:
        rows.append(("bypasses", count(model.bypass), f"{costs.bypass:,} per internal exit"))
    lines = ["| part | parameters | FLOPs per sample |", "|---|---:|---:|"]
    lines += [f"| {name} | {params:,} | {flops} |" for name, params, flops in rows]
    return "\n".join(lines) + "\n"
