"""Training schemes over all exits, one per `loss` config: the loss to optimise and, for the
schemes that train in stages, which parameters each stage trains.

A scheme with stages (DeeBERT's two-stage, FastBERT's self-distillation, two-stage DE³) splits
the run's optimizer steps by `stage_fractions`; `MultiExitModule` calls `enter_stage` when a
stage begins (also on resume) and restarts the learning-rate schedule there. DE³'s
distance-aware regularization (`DistanceAwareRegularization`) adds to a joint or a two-stage
scheme in the stages where that scheme trains the prototype mappings.
"""

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


def stage_starts(fractions: tuple[float, ...], total_steps: int) -> list[int]:
    """The optimizer step at which each stage begins, for stages taking `fractions` of the steps."""
    bounds = torch.tensor(fractions, dtype=torch.float64).cumsum(0)[:-1] * total_steps
    return [0, *(int(round(b)) for b in bounds.tolist())]


class JointLoss(nn.Module):
    """Weighted mean of every exit's task loss: Σ_m w_m·ℓ(z⁽ᵐ⁾, y) / Σ_m w_m (PABEE's joint training).

    One stage; the base of every scheme (`stage_fractions`, `enter_stage`).
    """

    stage_fractions: tuple[float, ...] = (1.0,)
    stage1_ckpt: str | None = None  # two-stage schemes: start from this finished stage 1

    def __init__(self, weighting: str = "ascending") -> None:
        super().__init__()
        layer_weights(1, weighting)  # validate early, before any training
        self.weighting = weighting

    @property
    def num_stages(self) -> int:
        return len(self.stage_fractions)

    def trains_on_cached_layers(self, stage: int) -> bool:
        """Whether `stage` trains only heads on a frozen backbone's cached layer outputs."""
        return False

    def trains_prototypes(self, stage: int) -> bool:
        """Whether the prototype mappings (if the model has them) train in `stage`, and so
        whether the prototypes follow them there: in every stage of a joint scheme."""
        return True

    def enter_stage(self, stage: int, model: nn.Module) -> None:
        """Set which parameters of the `MultiExitModel` train in `stage` (0-based): all of them here."""

    def forward(
        self, output: MultiExitOutput, labels: torch.Tensor, regression: bool, stage: int = 0
    ) -> dict[str, torch.Tensor]:
        """→ {"loss": scalar to optimise, "exit_losses": [L] per-exit task losses (detached)}."""
        losses = per_exit_task_loss(output.logits, labels, regression)
        weights = layer_weights(len(losses), self.weighting).to(losses.device)
        return {"loss": (weights * losses).sum() / weights.sum(), "exit_losses": losses.detach()}


class TwoStageLoss(JointLoss):
    """DeeBERT's two-stage training. Stage 1 (the first `first_stage` fraction of the steps):
    only the backbone and the final exit train, on the final exit's task loss, as in ordinary
    fine-tuning. Stage 2: they are frozen; the internal exits (with their bypasses and
    prototype mappings, if any) learn the task, their losses combined by `weighting`.

    `cache_layers`: stage 2 trains on the frozen backbone's layer outputs, computed once (see
    `de3.models.layer_cache`), instead of running the backbone at every step.
    `stage1_ckpt`: a checkpoint whose backbone and final exit are a finished stage 1 (any de3
    checkpoint of a two-stage scheme on the same task and backbone: stage 2 leaves them as stage 1
    made them). The run starts from them and is all stage 2: DeeBERT, FastBERT and two-stage DE³,
    whose stage 1 is the same fine-tuning, share one. Any other multi-exit checkpoint of the task
    and backbone (a joint scheme's) works the same way: its backbone and final exit are kept, its
    internal exits are not read (stage 2 trains this run's own from their initialisation).
    """

    def __init__(
        self,
        first_stage: float = 0.5,
        weighting: str = "uniform",
        cache_layers: bool = True,
        stage1_ckpt: str | None = None,
    ) -> None:
        super().__init__(weighting)
        if not 0.0 < first_stage < 1.0:
            raise De3Error(f"loss.first_stage is the fraction of the steps in stage 1: in (0, 1), got {first_stage}")
        self.stage1_ckpt = stage1_ckpt
        self.stage_fractions = (0.0, 1.0) if stage1_ckpt else (first_stage, 1.0 - first_stage)
        self.cache_layers = cache_layers

    def trains_on_cached_layers(self, stage: int) -> bool:
        return self.cache_layers and stage == 1

    def trains_prototypes(self, stage: int) -> bool:
        return stage == 1  # stage 1 trains the backbone and the final exit only

    def enter_stage(self, stage: int, model: nn.Module) -> None:
        # Frozen, not just left out of the loss: AdamW's weight decay moves any parameter that has a gradient.
        model.requires_grad_(stage == 1)
        for module in (model.backbone, model.exits[-1]):
            module.requires_grad_(stage == 0)

    def internal_losses(self, output: MultiExitOutput, labels: torch.Tensor, regression: bool) -> torch.Tensor:
        """Stage 2: → [L−1] losses of the internal exits (their task losses here)."""
        return per_exit_task_loss(output.logits[:-1], labels, regression)

    def forward(
        self, output: MultiExitOutput, labels: torch.Tensor, regression: bool, stage: int = 0
    ) -> dict[str, torch.Tensor]:
        task_losses = per_exit_task_loss(output.logits, labels, regression)
        parts = {"exit_losses": task_losses.detach()}
        if stage == 0:
            parts["loss"] = task_losses[-1]
            return parts
        losses = self.internal_losses(output, labels, regression)
        weights = layer_weights(len(losses), self.weighting).to(losses.device)
        parts["loss"] = (weights * losses).sum() / weights.sum()
        return parts


class DistillLoss(TwoStageLoss):
    """FastBERT's self-distillation: stage 1 as in `TwoStageLoss`; in stage 2 each internal exit
    learns the (frozen, detached) final exit's distribution, T²·KL(p_L^T ‖ p_m^T) with
    temperature T, instead of the labels. Regression: MSE to the final exit's output.
    """

    def __init__(
        self,
        first_stage: float = 0.5,
        weighting: str = "uniform",
        temperature: float = 1.0,
        cache_layers: bool = True,
        stage1_ckpt: str | None = None,
    ) -> None:
        super().__init__(first_stage, weighting, cache_layers, stage1_ckpt)
        if temperature <= 0:
            raise De3Error(f"loss.temperature must be positive, got {temperature}")
        self.temperature = temperature

    def internal_losses(self, output: MultiExitOutput, labels: torch.Tensor, regression: bool) -> torch.Tensor:
        teacher = output.logits[-1].detach()  # [B, C]
        students = output.logits[:-1]  # [L−1, B, C]
        if regression:
            return (students[..., 0] - teacher[:, 0]).pow(2).mean(1)
        t = self.temperature
        target = F.log_softmax(teacher / t, dim=-1).expand_as(students)
        kl = F.kl_div(F.log_softmax(students / t, dim=-1), target, log_target=True, reduction="none")
        return kl.sum(-1).mean(1) * t * t


class DistanceAwareRegularization(nn.Module):
    """DE³-BERT's distance-aware regularization (DAR), added to a training scheme (the class
    listed after this one): the scheme's loss + α·mean over internal layers of DAR (temperature
    τ), in the stages where the scheme trains the prototype mappings (`trains_prototypes`).
    """

    def __init__(self, alpha: float, tau: float, **scheme) -> None:
        super().__init__(**scheme)
        if tau <= 0:
            raise De3Error(f"loss.tau must be positive, got {tau}")
        if alpha < 0:
            raise De3Error(f"loss.alpha is DAR's weight: 0 or more, got {alpha}")
        self.alpha = alpha
        self.tau = tau

    def forward(
        self, output: MultiExitOutput, labels: torch.Tensor, regression: bool, stage: int = 0
    ) -> dict[str, torch.Tensor]:
        """→ the scheme's parts, and where DAR trains: the total with α·DAR added, and "dar":
        [L−1] (detached)."""
        if output.distances is None:
            raise De3Error("DAR needs prototypes: set model.prototypes (loss=de3 and loss=de3_two_stage do)")
        parts = super().forward(output, labels, regression, stage)
        if self.trains_prototypes(stage):
            dar = dar_loss(output.distances, labels, self.tau)
            parts["loss"] = parts["loss"] + self.alpha * dar.mean()
            parts["dar"] = dar.detach()
        return parts


class De3Loss(DistanceAwareRegularization, JointLoss):
    """DE³-BERT as one joint stage: the joint loss (weights by `weighting`) + α·DAR, DAR's
    gradient reaching the backbone through the mapping layers unless
    `model.prototypes.detach_backbone` stops it there."""

    def __init__(self, weighting: str = "ascending", alpha: float = 1.0, tau: float = 1.0) -> None:
        super().__init__(alpha, tau, weighting=weighting)


class TwoStageDe3Loss(DistanceAwareRegularization, TwoStageLoss):
    """Two-stage DE³: stage 1 is DeeBERT's (the backbone and the final exit fine-tuned on the
    final exit's loss; `stage1_ckpt` shares a finished one); stage 2 trains the internal exits,
    the mapping layers and the prototypes on the frozen backbone: the internal exits' task
    losses combined by `weighting`, + α·DAR. DAR cannot reach the backbone here."""

    def __init__(
        self,
        first_stage: float = 0.5,
        weighting: str = "uniform",
        alpha: float = 1.0,
        tau: float = 1.0,
        cache_layers: bool = True,
        stage1_ckpt: str | None = None,
    ) -> None:
        super().__init__(
            alpha,
            tau,
            first_stage=first_stage,
            weighting=weighting,
            cache_layers=cache_layers,
            stage1_ckpt=stage1_ckpt,
        )
