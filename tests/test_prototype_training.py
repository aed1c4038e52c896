"""Prototypes inside a real `fit`: set before the loss reads them, one EMA update per optimizer
step, and never moved by DAR's gradients (which do reach the mappings and the backbone, unless
`detach_backbone` stops them at the mappings)."""

import lightning as L
import torch
from hydra.utils import instantiate

from de3.jobs import build_datamodule
from de3.models.backbone import EncoderBackbone
from de3.models.multi_exit import MultiExitModel
from de3.models.prototypes import dar_loss
from tests.conftest import tiny_bert_encoder, trained_weights

GAMMA = 0.3  # not 0.5, where the EMA's two weights (1 − γ and γ) are equal and a swap goes unseen


class RecordingLoss(torch.nn.Module):
    """The module's loss, recording what it was given: prototypes as the loss saw them, mapped vectors, labels."""

    def __init__(self, module, loss) -> None:
        super().__init__()
        self.module, self.loss, self.calls = [module], loss, []

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.loss, name)

    def forward(self, output, labels, *args):
        prototypes = self.module[0].model.prototypes
        self.calls.append(
            {
                "prototypes": prototypes.prototypes.clone(),
                "initialized": prototypes.initialized.clone(),
                "mapped": output.mapped.detach().clone(),
                "labels": labels.clone(),
                "distances": output.distances.detach().clone(),
            }
        )
        return self.loss(output, labels, *args)


def hand_prototypes(calls, per_step: int, num_classes: int) -> list[torch.Tensor]:
    """The prototypes due before each call's loss and after the last step, recomputed with loops:
    a class is set to its batch mean when first seen (before the loss), and after every
    optimizer step each class present in the step's batches moves γ towards their mean."""
    current = torch.zeros_like(calls[0]["prototypes"])
    known = [False] * num_classes
    due, step_batches = [], []
    for index, call in enumerate(calls):
        mapped, labels = call["mapped"], call["labels"]
        for k in range(num_classes):
            if not known[k] and (labels == k).any():
                current[:, k] = mapped[:, labels == k].mean(1)
                known[k] = True
        due.append(current.clone())
        step_batches.append(call)
        if (index + 1) % per_step == 0:
            mapped = torch.cat([c["mapped"] for c in step_batches], 1)
            labels = torch.cat([c["labels"] for c in step_batches])
            for k in range(num_classes):
                if (labels == k).any():
                    current[:, k] = (1 - GAMMA) * current[:, k] + GAMMA * mapped[:, labels == k].mean(1)
            step_batches = []
    return due + [current]


def test_prototypes_set_before_the_loss_and_updated_once_per_optimizer_step(tiny_config):
    cfg = tiny_config("task=rte", "loss=de3", f"model.prototypes.gamma={GAMMA}", "data.batch_size=4")
    module = instantiate(cfg.model)
    module.loss_fn = RecordingLoss(module, module.loss_fn)
    datamodule = build_datamodule(cfg, module.task, module.tokenizer, "fit")
    trainer = L.Trainer(
        max_steps=3,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule)
    calls = module.loss_fn.calls
    assert trainer.global_step == 3 and len(calls) == 6  # 3 optimizer steps of 2 batches
    expected = hand_prototypes(calls, per_step=2, num_classes=2)
    for call, due in zip(calls, expected):
        present = torch.unique(call["labels"])
        assert call["initialized"][:, present].all()  # every class of the batch has a prototype before the loss
        torch.testing.assert_close(call["prototypes"], due, rtol=1e-5, atol=1e-6)
        assert torch.isfinite(call["distances"][..., present]).all()
    torch.testing.assert_close(module.model.prototypes.prototypes, expected[-1], rtol=1e-5, atol=1e-6)
    assert not torch.equal(expected[-1], expected[0])  # the updates did move them


def test_dar_gradients_reach_mappings_and_backbone_not_prototypes():
    tokenizer, encoder = tiny_bert_encoder()
    batch = tokenizer(["one", "two words", "three", "four"], padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 0, 1])
    torch.manual_seed(0)
    model = MultiExitModel(EncoderBackbone(encoder), 2, dropout=0.0, prototypes={"gamma": 0.1})
    with torch.no_grad():
        model.prototypes.update(model(**batch).mapped + 1.0, labels)  # prototypes away from the samples
    before = model.prototypes.prototypes.clone()
    dar_loss(model(**batch).distances, labels, tau=1.0).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prototypes.mappings.parameters())
    layer_one = model.backbone.encoder.encoder.layer[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer_one.parameters())
    assert "prototypes.prototypes" not in dict(model.named_parameters())  # a buffer no optimizer sees
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    assert torch.equal(model.prototypes.prototypes, before)
    assert model.prototypes.prototypes.grad is None


def test_detached_mappings_leave_backbone_and_exits_as_without_dar(tiny_config):
    # The two ablations of DAR differ only in the mappings (and, with a gradient-norm clip, in
    # the norm the mappings' gradients add); their full-depth scores are one result, not two.
    de3 = ("task=rte", "loss=de3", "data.batch_size=4")
    without_dar = trained_weights(tiny_config(*de3, "loss.alpha=0"), max_steps=4)
    detached = trained_weights(tiny_config(*de3, "model.prototypes.detach_backbone=true"), max_steps=4)
    mappings = [name for name in detached if name.startswith("prototypes.")]
    assert any(not torch.equal(detached[name], without_dar[name]) for name in mappings)  # DAR trained them
    for name in set(detached) - set(mappings):
        torch.testing.assert_close(detached[name], without_dar[name], rtol=0, atol=0, msg=name)
