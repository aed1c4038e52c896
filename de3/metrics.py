"""Task metrics by name (the task registry says which a task uses), as torchmetrics objects."""

from __future__ import annotations

import torch
import torchmetrics
from torchmetrics import classification, regression

from de3.errors import De3Error


class GlueMatthewsCorrCoef(classification.MulticlassConfusionMatrix):
    """Matthews correlation as GLUE scores CoLA (scikit-learn's `matthews_corrcoef`): the
    multiclass R_K statistic from the confusion matrix, and 0 where it is undefined (a
    constant prediction or constant labels). torchmetrics' own MCC gives such a predictor a
    small non-zero score instead (+0.0256 for "all acceptable" on CoLA dev)."""

    def compute(self) -> torch.Tensor:
        confusion = super().compute().double()  # [C, C]: rows true class, columns predicted
        true_counts, predicted_counts = confusion.sum(1), confusion.sum(0)
        correct, total = confusion.trace(), confusion.sum()
        covariance = correct * total - true_counts @ predicted_counts
        spread_predicted = total**2 - predicted_counts @ predicted_counts
        spread_true = total**2 - true_counts @ true_counts
        denominator = spread_predicted * spread_true
        if denominator == 0:
            return torch.zeros((), dtype=torch.float32)
        return (covariance / denominator.sqrt()).float()


def make_metric(name: str, num_outputs: int) -> torchmetrics.Metric:
    """A fresh metric: accuracy, f1 (positive class; macro over classes beyond two), mcc (as
    GLUE computes it), pearson or spearman. Scores are fractions in [0, 1] or correlations in
    [−1, 1]."""
    if name == "accuracy":
        return classification.MulticlassAccuracy(num_classes=num_outputs, average="micro")
    if name == "f1":
        if num_outputs == 2:
            return classification.BinaryF1Score()
        return classification.MulticlassF1Score(num_classes=num_outputs, average="macro")
    if name == "mcc":
        return GlueMatthewsCorrCoef(num_classes=num_outputs)
    if name == "pearson":
        return regression.PearsonCorrCoef()
    if name == "spearman":
        return regression.SpearmanCorrCoef()
    raise De3Error(f"unknown metric {name!r}")


def predictions(logits: torch.Tensor, is_regression: bool) -> torch.Tensor:
    """What metrics score: the argmax class, or the single regression output ([..., C] → [...])."""
    return logits[..., 0].float() if is_regression else logits.argmax(-1)
