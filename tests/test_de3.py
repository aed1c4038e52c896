"""DE³-BERT core: indicators, prototypes, DAR, the de3 loss and training with prototypes."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from de3.errors import De3Error
from de3.jobs import train
from de3.models.backbone import EncoderBackbone
from de3.models.indicators import distance_ratio, edr, normalized_entropy
from de3.models.losses import De3Loss, TwoStageDe3Loss
from de3.models.module import MultiExitModule
from de3.models.multi_exit import MultiExitModel, MultiExitOutput
from de3.models.prototypes import PrototypicalNetworks, dar_loss, euclidean_distances
from tests.conftest import tiny_bert_encoder


def test_normalized_entropy_hand_values():
    assert normalized_entropy(torch.zeros(3)).item() == pytest.approx(1.0)
    p = torch.tensor([0.75, 0.25])
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert normalized_entropy(p.log()).item() == pytest.approx(expected, rel=1e-6)
    assert normalized_entropy(torch.tensor([1000.0, 0.0, 0.0])).item() == 0.0


def test_distance_ratio_hand_values():
    distances = torch.tensor([[1.0, 3.0, 2.0], [2.0, 2.0, 5.0], [0.0, 0.0, 0.0], [1e-6, 10.0, 10.0]])
    predicted = torch.tensor([0, 1, 2, 0])
    # r1=1, r2=2 → 0.5·(1 − 1/2); r1=r2 → 0.5; all zero → 0.5; r1 ≪ r2 → ≈0
    ratio = distance_ratio(distances, predicted)
    assert ratio[:3].tolist() == pytest.approx([0.25, 0.5, 0.5])
    assert ratio[3].item() == pytest.approx(0.0, abs=1e-6)
    # prediction far from its prototype: r1=3, r2=1 → 0.5·(1 + 2/3)
    assert distance_ratio(torch.tensor([3.0, 1.0]), torch.tensor(0)).item() == pytest.approx(5 / 6)
    # a class with no prototype yet (∞): no nan
    assert torch.isfinite(distance_ratio(torch.tensor([1.0, float("inf")]), torch.tensor(0)))


def test_edr_hand_values_and_limits():
    entropy, ratio = torch.tensor([0.4, 0.5, 0.0, 0.3]), torch.tensor([0.2, 0.0, 0.7, 0.3])
    values = edr(entropy, ratio, lam=1.0)
    assert values[0].item() == pytest.approx(2 / (1 / 0.2 + 1 / 0.4))
    assert values[1].item() == 0.0 and values[2].item() == 0.0
    assert values[3].item() == pytest.approx(0.3)
    assert edr(entropy, ratio, lam=0.0).tolist() == pytest.approx(entropy.tolist())  # λ = 0: pure entropy
    assert edr(torch.tensor([0.4]), torch.tensor([0.2]), lam=3.0).item() == pytest.approx(4 / (3 / 0.2 + 1 / 0.4))


def test_edr_is_the_harmonic_mean_as_defined_to_float32_rounding():
    """EDR is computed as (λ + 1)·E·DR / (λ·E + DR); it must be the definition's value, computed
    here in float64 from the reciprocals, to within float32's rounding, and λ = 0 the entropy itself."""
    generator = torch.Generator().manual_seed(0)
    entropy, ratio = torch.rand(10_000, generator=generator), torch.rand(10_000, generator=generator)
    entropy[::17], ratio[::19], ratio[::23] = 0.0, 0.0, 1.0  # E = 0, DR = 0, and no prototype evidence
    both = entropy.double(), ratio.double()
    for lam in (0.25, 1.0, 16.0):
        defined = ((lam + 1) / (lam / both[1] + 1 / both[0])).nan_to_num(0.0)  # 1/0 = ∞ → 0
        assert torch.allclose(edr(entropy, ratio, lam).double(), defined, rtol=1e-6, atol=0.0)
    assert torch.equal(edr(entropy, ratio, 0.0), entropy)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_indicators_never_nan(num_classes):
    torch.manual_seed(0)
    logits = torch.randn(5, 7, num_classes)
    identical = torch.zeros(5, 7, num_classes)  # identical prototypes, zero distances
    for distances in (identical, torch.rand(5, 7, num_classes)):
        ratio = distance_ratio(distances, logits.argmax(-1))
        values = edr(normalized_entropy(logits), ratio, lam=2.0)
        assert torch.isfinite(ratio).all() and torch.isfinite(values).all()
        assert ((0 <= values) & (values <= 1)).all()


def test_prototypes_converge_to_class_means_on_gaussians():
    torch.manual_seed(0)
    protos = PrototypicalNetworks(num_layers=2, hidden_size=4, num_classes=3, gamma=0.05)
    means = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, -5.0, 0]])
    for _ in range(400):
        labels = torch.randint(0, 3, (32,))
        mapped = (means[labels] + 0.5 * torch.randn(32, 4)).expand(2, 32, 4)
        protos.update(mapped, labels)
    torch.testing.assert_close(protos.prototypes, means.expand(2, 3, 4), atol=0.1, rtol=0)


def test_first_batch_initialises_and_ema_blends():
    protos = PrototypicalNetworks(num_layers=1, hidden_size=2, num_classes=3, gamma=0.5)
    mapped = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [10.0, 0.0]]])
    labels = torch.tensor([0, 0, 1])  # one batch missing class 2
    assert protos.update(mapped, labels, only_missing=True)
    assert protos.prototypes[0].tolist() == [[2.0, 2.0], [10.0, 0.0], [0.0, 0.0]]
    assert protos.initialized[0].tolist() == [True, True, False]
    assert not protos.update(mapped, labels, only_missing=True)  # nothing missing any more among 0 and 1
    protos.update(torch.tensor([[[4.0, 4.0]]]), torch.tensor([0]))
    assert protos.prototypes[0, 0].tolist() == [3.0, 3.0]  # (1 − γ)·2 + γ·4
    assert torch.isinf(protos.layer_distances(0, torch.zeros(1, 2))[0, 2])  # class 2 has no prototype


def test_dar_loss_hand_value_and_single_class_batch():
    distances = torch.tensor([[[1.0, 2.0], [0.5, 0.5]]])  # [1, B=2, C=2]
    labels = torch.tensor([0, 1])
    tau = 0.5
    expected = (
        F.cross_entropy(torch.tensor([[-2.0, -4.0]]), torch.tensor([0]))
        + F.cross_entropy(torch.tensor([[-1.0, -1.0]]), torch.tensor([1]))
    ) / 2
    assert dar_loss(distances, labels, tau).item() == pytest.approx(expected.item())
    one_class = dar_loss(torch.tensor([[[1.0, float("inf")]]]), torch.tensor([0]), 1.0)
    assert one_class.item() == 0.0


def test_distance_gradient_is_finite_at_zero():
    mapped = torch.zeros(1, 2, requires_grad=True)
    euclidean_distances(mapped, torch.zeros(1, 2)).sum().backward()
    assert torch.isfinite(mapped.grad).all()


def test_de3_loss_adds_alpha_dar():
    torch.manual_seed(0)
    output = MultiExitOutput(logits=torch.randn(3, 4, 2), pooled=torch.zeros(3, 4, 8), distances=torch.rand(2, 4, 2))
    labels = torch.tensor([0, 1, 0, 1])
    joint = De3Loss(alpha=0.0)(output, labels, regression=False)["loss"]
    parts = De3Loss(alpha=2.0, tau=0.5)(output, labels, regression=False)
    assert parts["loss"].item() == pytest.approx(
        joint.item() + 2.0 * dar_loss(output.distances, labels, 0.5).mean().item()
    )
    with pytest.raises(De3Error, match="DAR needs prototypes"):
        De3Loss()(MultiExitOutput(output.logits, output.pooled), labels, regression=False)
    with pytest.raises(De3Error, match="loss.alpha is DAR's weight"):
        De3Loss(alpha=-1.0)


def test_two_stage_de3_adds_dar_in_stage_two_only():
    torch.manual_seed(0)
    output = MultiExitOutput(logits=torch.randn(3, 4, 2), pooled=torch.zeros(3, 4, 8), distances=torch.rand(2, 4, 2))
    labels = torch.tensor([0, 1, 0, 1])
    loss = TwoStageDe3Loss(alpha=2.0, tau=0.5)
    stage_one = loss(output, labels, regression=False, stage=0)
    assert "dar" not in stage_one  # DeeBERT's stage 1: the final exit's CE alone
    assert stage_one["loss"].item() == pytest.approx(F.cross_entropy(output.logits[-1], labels).item())
    stage_two = loss(output, labels, regression=False, stage=1)
    internal_ce = F.cross_entropy(output.logits[:-1].flatten(0, 1), labels.repeat(2)).item()  # uniform weights
    dar = dar_loss(output.distances, labels, 0.5)
    assert stage_two["loss"].item() == pytest.approx(internal_ce + 2.0 * dar.mean().item())
    torch.testing.assert_close(stage_two["dar"], dar)
    assert [loss.trains_prototypes(stage) for stage in (0, 1)] == [False, True]


def gradient_norms(model: torch.nn.Module) -> dict[str, float]:
    """Parameter name → the norm of its gradient (0 where it has none); the gradients are cleared."""
    norms = {name: 0.0 if p.grad is None else p.grad.norm().item() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return norms


def test_detached_mappings_take_dar_alone_and_the_exits_ce_still_trains_the_backbone():
    tokenizer, encoder = tiny_bert_encoder()
    batch = tokenizer(["one", "two words", "three", "four"], padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 0, 1])
    torch.manual_seed(0)
    settings = {"gamma": 0.1, "detach_backbone": True}
    model = MultiExitModel(EncoderBackbone(encoder), 2, dropout=0.0, prototypes=settings)
    with torch.no_grad():
        model.prototypes.update(model(**batch).mapped + 1.0, labels)  # prototypes away from the samples
    dar_loss(model(**batch).distances, labels, tau=1.0).sum().backward()
    from_dar = gradient_norms(model)
    assert {name for name, norm in from_dar.items() if norm > 0} == {
        name for name, _ in model.named_parameters() if name.startswith("prototypes.mappings.")
    }
    De3Loss(alpha=0.0)(model(**batch), labels, regression=False)["loss"].backward()
    from_ce = gradient_norms(model)
    assert all(from_ce[name] > 0 for name, _ in model.named_parameters() if name.startswith("backbone.encoder.encoder"))


def test_two_stage_de3_stage_two_dar_reaches_the_mappings_only(tiny_config):
    module = instantiate(tiny_config("task=rte", "experiment=de3_two_stage").model)
    model = module.model
    module.loss_fn.enter_stage(1, model)
    batch = module.tokenizer(["one", "two words", "three", "four"], padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():  # stage 2 reads the frozen backbone's cached layer outputs
        pooled = model.pooled_layers(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        model.prototypes.update(model.from_pooled(pooled).mapped + 1.0, labels)
    output = model.from_pooled(pooled)
    dar_loss(output.distances, labels, tau=1.0).sum().backward()
    mappings = {name for name, _ in model.named_parameters() if name.startswith("prototypes.mappings.")}
    assert {name for name, norm in gradient_norms(model).items() if norm > 0} == mappings
    module.loss_fn(model.from_pooled(pooled), labels, regression=False, stage=1)["loss"].backward()
    internal_exits = {name for name, _ in model.exits[:-1].named_parameters(prefix="exits")}
    assert {name for name, norm in gradient_norms(model).items() if norm > 0} == mappings | internal_exits


def test_de3_training_checkpoint_restores_prototypes_bit_for_bit(tiny_config, tmp_path, monkeypatch):
    in_memory = {}  # global step → the trained module's prototypes when it saved a checkpoint

    def remember(self, checkpoint):
        in_memory[self.global_step] = self.model.prototypes.prototypes.clone()

    monkeypatch.setattr(MultiExitModule, "on_save_checkpoint", remember)
    train(tiny_config("task=rte", "loss=de3"))
    results = json.loads((tmp_path / "results.json").read_text())
    saved_at = torch.load(results["checkpoint"], weights_only=True)["global_step"]
    reloaded = MultiExitModule.from_checkpoint(results["checkpoint"])  # a fresh module: zero prototypes until loaded
    assert reloaded.model.prototypes.initialized.all()
    assert torch.equal(reloaded.model.prototypes.prototypes, in_memory[saved_at])
    assert in_memory[saved_at].abs().sum() > 0
    assert (tmp_path / "prototypes.png").stat().st_size > 10_000


def test_de3_on_regression_is_a_clear_error(tiny_config):
    with pytest.raises(Exception) as info:
        train(tiny_config("task=stsb", "loss=de3"))
    from de3.errors import find_user_error

    assert "prototypes (loss=de3) need classes" in str(find_user_error(info.value))
