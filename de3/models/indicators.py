"""Exit indicators (lower = more certain), as pure tensor functions over any leading shape.

Shared by the DE³ training diagnostics, the threshold sweep and real early-exit inference.
"""

from __future__ import annotations

import math

import torch


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax z) / log C ∈ [0, 1]: [..., C] → [...]."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return (entropy / math.log(logits.shape[-1])).clamp(0.0, 1.0)


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
    return 0.5 * (1.0 + ratio.masked_fill(torch.isinf(largest), 1.0))


def edr(entropy: torch.Tensor, ratio: torch.Tensor, lam: float) -> torch.Tensor:
    """EDR = (λ + 1) / (λ/DR + 1/Entropy): the weighted harmonic mean; 0 if DR or Entropy is 0.

    λ = 0 gives the entropy alone; large λ approaches DR. With DR = 1 (no prototype evidence,
    see `distance_ratio`) EDR = (λ + 1)·E / (λ·E + 1) ≥ E: never an earlier exit than the
    entropy alone at the same threshold.
    """
    entropy, ratio = entropy.float(), ratio.float()
    zero = (torch.minimum(entropy, ratio) if lam > 0 else entropy) <= 0
    safe_entropy = entropy.clamp(min=torch.finfo(entropy.dtype).tiny)
    safe_ratio = ratio.clamp(min=torch.finfo(ratio.dtype).tiny)
    return ((lam + 1.0) / (lam / safe_ratio + 1.0 / safe_entropy)).masked_fill(zero, 0.0)
