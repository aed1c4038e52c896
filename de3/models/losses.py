"""Training losses over all exits. Each is configured by the `loss` config group."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from de3.errors import De3Error
from de3.models.multi_exit import MultiExitOutput
from de3.models.prototypes import dar_loss

WEIGHTINGS = ("ascending", "uniform", "descending")


def layer_weights(num_layers: int, weighting: str) -> torch.Tensor:
    """Exit weights w_m for m = 1..L: m (PABEE, ascending), 1 (uniform) or L − m + 1 (descending)."""
    if weighting not in WEIGHTINGS:
        raise De3Error(f"loss.weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
    index = torch.arange(1, num_layers + 1, dtype=torch.float32)
    return {"ascending": index, "uniform": torch.ones(num_layers), "descending": index.flip(0)}[weighting]


def per_exit_task_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """[L, B, C] logits and [B] targets → [L] losses: cross-entropy, or MSE on the single output."""
    num_layers, batch = logits.shape[:2]
    if regression:
        return F.mse_loss(logits[..., 0], labels.to(logits.dtype).expand(num_layers, batch), reduction="none").mean(1)
    flat = F.cross_entropy(logits.flatten(0, 1), labels.repeat(num_layers), reduction="none")
    return flat.view(num_layers, batch).mean(1)


class JointLoss(nn.Module):
    """Weighted mean of every exit's task loss: Σ_m w_m·ℓ(z⁽ᵐ⁾, y) / Σ_m w_m (PABEE's joint training)."""

    def __init__(self, weighting: str = "ascending") -> None:
        super().__init__()
        layer_weights(1, weighting)  # validate early, before any training
        self.weighting = weighting

    def forward(self, output: MultiExitOutput, labels: torch.Tensor, regression: bool) -> dict[str, torch.Tensor]:
        """→ {"loss": scalar to optimise, "exit_losses": [L] per-exit task losses (detached)}."""
        losses = per_exit_task_loss(output.logits, labels, regression)
        weights = layer_weights(len(losses), self.weighting).to(losses.device)
        return {"loss": (weights * losses).sum() / weights.sum(), "exit_losses": losses.detach()}


class De3Loss(JointLoss):
    """DE³-BERT: the joint loss plus α·mean over internal layers of the DAR loss (temperature τ)."""

    def __init__(self, weighting: str = "ascending", alpha: float = 1.0, tau: float = 1.0) -> None:
        super().__init__(weighting)
        if tau <= 0:
            raise De3Error(f"loss.tau must be positive, got {tau}")
        self.alpha = alpha
        self.tau = tau

    def forward(self, output: MultiExitOutput, labels: torch.Tensor, regression: bool) -> dict[str, torch.Tensor]:
        """→ the joint loss's parts, the total with α·DAR added, and "dar": [L−1] (detached)."""
        if output.distances is None:
            raise De3Error("loss=de3 needs prototypes: set model.prototypes (loss=de3 does by default)")
        parts = super().forward(output, labels, regression)
        dar = dar_loss(output.distances, labels, self.tau)
        parts["loss"] = parts["loss"] + self.alpha * dar.mean()
        parts["dar"] = dar.detach()
        return parts
