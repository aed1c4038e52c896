"""Task metrics agree with GLUE's own definitions (scikit-learn and SciPy, as GLUE's scorer uses)."""

import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from de3.metrics import make_metric

# CoLA dev: 721 acceptable, 322 unacceptable
COLA_DEV_LABELS = torch.tensor([1] * 721 + [0] * 322)


@pytest.mark.parametrize("constant", [0, 1])
def test_mcc_of_a_constant_predictor_is_zero(constant):
    predicted = torch.full_like(COLA_DEV_LABELS, constant)
    assert make_metric("mcc", 2)(predicted, COLA_DEV_LABELS).item() == 0.0
    assert matthews_corrcoef(COLA_DEV_LABELS.numpy(), predicted.numpy()) == 0.0


def test_mcc_with_constant_labels_is_zero():
    labels = torch.zeros(50, dtype=torch.long)
    predicted = torch.randint(0, 2, (50,), generator=torch.Generator().manual_seed(0))
    assert make_metric("mcc", 2)(predicted, labels).item() == 0.0


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_scikit_learn(num_classes, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (300,), generator=generator)
    # agree with the labels more often than chance, so the scores are not all near zero
    predicted = torch.where(
        torch.rand(300, generator=generator) < 0.4, labels, torch.randint(0, num_classes, (300,), generator=generator)
    )
    mcc = make_metric("mcc", num_classes)
    for half in (slice(0, 150), slice(150, 300)):  # accumulated over batches, as in evaluation
        mcc.update(predicted[half], labels[half])
    assert mcc.compute().item() == pytest.approx(matthews_corrcoef(labels, predicted), abs=1e-6)
    accuracy = make_metric("accuracy", num_classes)(predicted, labels).item()
    assert accuracy == pytest.approx(accuracy_score(labels, predicted), abs=1e-6)
    f1 = make_metric("f1", num_classes)(predicted, labels).item()
    average = "binary" if num_classes == 2 else "macro"
    assert f1 == pytest.approx(f1_score(labels, predicted, average=average), abs=1e-6)


def test_correlations_match_scipy_with_ties():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (200,), generator=generator).float()  # STS-B-like scores, many ties
    predicted = labels + torch.randn(200, generator=generator)
    assert make_metric("pearson", 1)(predicted, labels).item() == pytest.approx(
        pearsonr(predicted, labels)[0], abs=1e-5
    )
    assert make_metric("spearman", 1)(predicted, labels).item() == pytest.approx(
        spearmanr(predicted, labels)[0], abs=1e-5
    )
