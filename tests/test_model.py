"""Exit heads, pooling, the joint loss and the metrics factory."""

import math

import pytest
import torch
import torch.nn.functional as F

from de3.errors import De3Error
from de3.metrics import make_metric, predictions
from de3.models.backbone import EncoderBackbone
from de3.models.exits import pool
from de3.models.losses import JointLoss, layer_weights
from de3.models.multi_exit import MultiExitModel, MultiExitOutput
from tests.conftest import tiny_bert_encoder


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]


def test_layer_weights():
    assert layer_weights(3, "ascending").tolist() == [1, 2, 3]
    assert layer_weights(3, "uniform").tolist() == [1, 1, 1]
    assert layer_weights(3, "descending").tolist() == [3, 2, 1]
    with pytest.raises(De3Error, match="loss.weighting"):
        JointLoss("sideways")


def test_joint_loss_is_the_weighted_mean_of_exit_losses():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 2)
    labels = torch.tensor([0, 1, 1, 0])
    per_exit = [F.cross_entropy(logits[m], labels).item() for m in range(3)]
    out = JointLoss("ascending")(MultiExitOutput(logits, pooled=None), labels, regression=False)
    assert out["loss"].item() == pytest.approx((1 * per_exit[0] + 2 * per_exit[1] + 3 * per_exit[2]) / 6, rel=1e-6)
    assert out["exit_losses"].tolist() == pytest.approx(per_exit, rel=1e-6)
    targets = torch.tensor([1.0, 2.0, 0.0, 4.0])
    mse = JointLoss("uniform")(MultiExitOutput(logits[..., :1], pooled=None), targets, regression=True)["loss"].item()
    assert mse == pytest.approx(sum(F.mse_loss(logits[m, :, 0], targets).item() for m in range(3)) / 3, rel=1e-6)


def test_multi_exit_model_outputs_every_exit():
    tokenizer, encoder = tiny_bert_encoder()
    model = MultiExitModel(EncoderBackbone(encoder), num_outputs=3, pooling="mean").eval()
    batch = tokenizer(["one", "two words"], padding=True, return_tensors="pt")
    out = model(**batch)
    assert out.logits.shape == (2, 2, 3) and out.pooled.shape == (2, 2, 32)
    with pytest.raises(De3Error, match="exit pooling"):
        MultiExitModel(EncoderBackbone(encoder), 3, pooling="max")


def test_metrics_by_name():
    preds, target = torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 0])
    assert make_metric("accuracy", 2)(preds, target).item() == pytest.approx(0.75)
    assert make_metric("f1", 2)(preds, target).item() == pytest.approx(2 / 3)
    assert make_metric("mcc", 2)(preds, target).item() == pytest.approx(1 / math.sqrt(3))
    x, y = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 3.0, 2.0, 4.0])
    assert make_metric("spearman", 1)(x, y).item() == pytest.approx(0.8)
    assert make_metric("pearson", 1)(x, y).item() == pytest.approx(0.8)
    assert predictions(torch.tensor([[0.1, 0.9], [2.0, 1.0]]), False).tolist() == [1, 0]
    assert predictions(torch.tensor([[0.5], [1.5]]), True).tolist() == [0.5, 1.5]
