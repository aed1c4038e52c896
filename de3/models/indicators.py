"""Exit indicators (lower = more certain), as pure tensor functions over any leading shape.

Shared by the DE³ training diagnostics, the threshold sweep and real early-exit inference.
"""

from __future__ import annotations

import math

import torch


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax z) / log C ∈ [0, 1]: [..., C] → [...]."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    # Σ p·log p is −H: one division by −log C gives H / log C
    return ((log_probs.exp() * log_probs).sum(-1) / -math.log(logits.shape[-1])).clamp(0.0, 1.0)


def distance_ratio(distances: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """DR = 0.5·(1 + (r₁ − r₂) / max(r₁, r₂)) ∈ [0, 1].

    `distances` [..., C] to the class prototypes; `predicted` [...] the class ĉ the exit
    predicts. r₁ is the distance to ĉ's prototype, r₂ the smallest distance to any other
    class that has one. DR = 0.5 when r₁ = r₂ (also when both are 0), → 0 when r₁ ≪ r₂.
    A class never seen in training has no prototype (distance ∞). When ĉ has none, or no
    other class has one (r₂ does not exist), the prototypes say nothing in favour of ĉ and
    DR = 1, the most uncertain value — not the limit 0 of r₂ → ∞, which would let every
    such sample exit at the first layer whatever its entropy.
    """
    distances = distances.float()
    index = predicted.unsqueeze(-1)
    r1 = distances.gather(-1, index).squeeze(-1)
    r2 = distances.scatter(-1, index, float("inf")).amin(-1)
    largest = torch.maximum(r1, r2)  # ∞ exactly when r1 or r2 is; 0 only when both are (then r1 − r2 = 0)
    ratio = (r1 - r2) / largest.clamp(min=torch.finfo(largest.dtype).tiny)
    return ratio.masked_fill_(largest.isinf(), 1.0).add_(1.0).mul_(0.5)


def edr(entropy: torch.Tensor, ratio: torch.Tensor, lam: float) -> torch.Tensor:
    """EDR = (λ + 1) / (λ/DR + 1/Entropy): the weighted harmonic mean; 0 if DR or Entropy is 0.

    λ = 0 gives the entropy alone; large λ approaches DR. With DR = 1 (no prototype evidence,
    see `distance_ratio`) EDR = (λ + 1)·E / (λ·E + 1) ≥ E: never an earlier exit than the
    entropy alone at the same threshold. Computed as (λ + 1)·E·DR / (λ·E + DR): four operations
    where the reciprocals take nine, for the per-layer step of batch-1 early exit.
    """
    entropy, ratio = entropy.float(), ratio.float()
    if lam == 0:
        return entropy
    # E, DR ≥ 0: the denominator is 0 only where both are, and there the numerator is 0 too
    denominator = torch.add(ratio, entropy, alpha=lam).clamp_(min=torch.finfo(entropy.dtype).tiny)
    return (entropy * ratio).mul_(lam + 1.0).div_(denominator)
