"""Task metrics by name (the task registry says which a task uses), as torchmetrics objects."""

from __future__ import annotations

import torch
import torchmetrics
from torchmetrics import classification, regression

from de3.errors import De3Error


def make_metric(name: str, num_outputs: int) -> torchmetrics.Metric:
    """A fresh metric: accuracy, f1 (positive class; macro over classes beyond two), mcc,
    pearson or spearman. Scores are fractions in [0, 1] or correlations in [−1, 1]."""
    if name == "accuracy":
        return classification.MulticlassAccuracy(num_classes=num_outputs, average="micro")
    if name == "f1":
        if num_outputs == 2:
            return classification.BinaryF1Score()
        return classification.MulticlassF1Score(num_classes=num_outputs, average="macro")
    if name == "mcc":
        return classification.MulticlassMatthewsCorrCoef(num_classes=num_outputs)
    if name == "pearson":
        return regression.PearsonCorrCoef()
    if name == "spearman":
        return regression.SpearmanCorrCoef()
    raise De3Error(f"unknown metric {name!r}")


def predictions(logits: torch.Tensor, is_regression: bool) -> torch.Tensor:
    """What metrics score: the argmax class, or the single regression output ([..., C] → [...])."""
    return logits[..., 0].float() if is_regression else logits.argmax(-1)
