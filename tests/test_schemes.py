"""Training schemes (two-stage, self-distillation), BADGE's bypasses, and the method recipes."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from de3.errors import De3Error
from de3.flops import FlopsModel
from de3.jobs import build_datamodule, train
from de3.models.backbone import EncoderBackbone
from de3.models.losses import DistillLoss, TwoStageLoss, stage_starts
from de3.models.module import staged_linear_schedule
from de3.models.multi_exit import MultiExitModel, MultiExitOutput
from tests.conftest import tiny_bert_encoder

METHODS = ("deebert", "pabee", "pcee", "fastbert", "badge", "de3", "de3_two_stage", "de3_detached")


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())}


class SnapshotAtStep(L.Callback):
    """Keeps a copy of the model's parameters (and which prototypes are set, if it has any) just
    before optimizer step `step` runs."""

    def __init__(self, step: int) -> None:
        self.step, self.params, self.prototypes_set = step, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.params = snapshot(pl_module.model)
            if pl_module.model.prototypes is not None:
                self.prototypes_set = pl_module.model.prototypes.initialized.clone()


@pytest.mark.parametrize("loss", ["two_stage", "distill", "de3_two_stage"])
def test_stage_two_leaves_backbone_and_final_exit_bit_identical(tiny_config, loss):
    cfg = tiny_config("task=rte", f"loss={loss}", "trainer.max_steps=6", "loss.first_stage=0.5")
    module = instantiate(cfg.model)
    datamodule = build_datamodule(cfg, module.task, module.tokenizer, "fit")
    start, end = SnapshotAtStep(0), SnapshotAtStep(3)
    trainer = L.Trainer(
        max_steps=6,
        callbacks=[start, end],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule)
    model = module.model
    frozen = {f"backbone.{n}" for n, _ in model.backbone.named_parameters()}
    frozen |= {f"exits.{len(model.exits) - 1}.{n}" for n, _ in model.exits[-1].named_parameters()}
    internal = {f"exits.{m}.{n}" for m in range(len(model.exits) - 1) for n, _ in model.exits[m].named_parameters()}
    if model.prototypes is not None:  # two-stage DE³: its mapping layers train in stage 2 as well
        internal |= {f"prototypes.{n}" for n, _ in model.prototypes.named_parameters()}
        assert not end.prototypes_set.any() and model.prototypes.initialized.all()  # set in stage 2, not before
    assert changed(end.params, model).isdisjoint(frozen)  # stage 2 (steps 3–5) froze them bit for bit
    assert changed(end.params, model) == internal  # ... and trained every internal exit (and mapping) parameter
    moved_in_stage_one = {n for n in start.params if not torch.equal(start.params[n], end.params[n])}
    assert moved_in_stage_one.isdisjoint(internal)  # stage 1 trains the final exit ...
    assert {n for n in frozen if n.startswith("exits.")} <= moved_in_stage_one
    assert any(n.startswith("backbone.") for n in moved_in_stage_one)  # ... and the backbone


def test_stage_boundaries_and_restarted_schedule():
    assert stage_starts((1.0,), 10) == [0]
    assert stage_starts((0.5, 0.5), 10) == [0, 5]
    assert stage_starts((0.3, 0.7), 9) == [0, 3]
    factor = staged_linear_schedule([0, 10], 20, warmup_ratio=0.2)
    assert [factor(s) for s in (0, 1, 2, 6, 10, 11, 12, 19)] == pytest.approx(
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.5, 1.0, 0.125]
    )
    with pytest.raises(De3Error, match="first_stage"):
        TwoStageLoss(first_stage=1.0)


def test_distillation_target_is_detached_and_matches_kl():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5, requires_grad=True)  # [L, B, C]
    labels = torch.tensor([0, 1, 2, 3])
    loss = DistillLoss(temperature=2.0)
    out = loss(MultiExitOutput(logits, pooled=None), labels, regression=False, stage=1)
    out["loss"].backward()
    assert logits.grad[-1].abs().sum() == 0  # nothing flows into the teacher
    assert logits.grad[:-1].abs().sum() > 0
    teacher = F.softmax(logits[-1].detach() / 2.0, dim=-1)
    expected = [
        4.0 * (teacher * (teacher.log() - F.log_softmax(logits[m].detach() / 2.0, dim=-1))).sum(-1).mean()
        for m in range(2)
    ]
    assert out["loss"].item() == pytest.approx(sum(e.item() for e in expected) / 2, rel=1e-5)
    # stage 1: the final exit's task loss only
    stage_one = loss(MultiExitOutput(logits, pooled=None), labels, regression=False, stage=0)["loss"]
    assert stage_one.item() == pytest.approx(F.cross_entropy(logits[-1], labels).item(), rel=1e-6)
    same = logits.detach()[-1:].expand(3, 4, 5)
    assert loss(MultiExitOutput(same, pooled=None), labels, False, stage=1)["loss"].item() == pytest.approx(0, abs=1e-6)


def test_bypasses_start_as_identity_and_are_counted_in_flops():
    tokenizer, encoder = tiny_bert_encoder()
    batch = tokenizer(["one", "two words"], padding=True, return_tensors="pt")
    torch.manual_seed(0)
    plain = MultiExitModel(EncoderBackbone(encoder), 2, dropout=0.0).eval()
    torch.manual_seed(0)
    bypassed = MultiExitModel(EncoderBackbone(encoder), 2, dropout=0.0, bypass={"enabled": True, "rank": 4})
    bypassed.exits.load_state_dict(plain.exits.state_dict())
    bypassed.eval()
    torch.testing.assert_close(bypassed(**batch).logits, plain(**batch).logits)  # W_up starts at zero
    assert len(bypassed.bypass.blocks) == 1  # one internal layer, block size 2

    costs, base = FlopsModel.of(bypassed), FlopsModel.of(plain)
    one = torch.randn(1, 32)  # one sample's pooled vector
    with FlopCounterMode(display=False) as counter:
        bypassed.bypass(0, one)
    projections = counter.get_total_flops()  # torch counts the matmuls; LayerNorm and the add are not counted
    assert costs.bypass == bypassed.bypass.flops() and projections <= costs.bypass <= projections + 10 * 32
    with FlopCounterMode(display=False) as counter:
        bypassed.exits[0](one)
    assert costs.exit_head == counter.get_total_flops()
    lengths, layers = torch.tensor([5, 7]), torch.tensor([1, 2])
    extra = costs.early_exit(layers, lengths, False) - base.early_exit(layers, lengths, False)
    assert extra.tolist() == [costs.bypass, costs.bypass]  # exit 1 reads a bypass, the final exit does not
    assert torch.equal(costs.full_depth(lengths), base.full_depth(lengths))
    assert costs.speedup(torch.tensor([1, 1]), lengths, False) < base.speedup(torch.tensor([1, 1]), lengths, False)


def test_bypass_blocks_group_internal_layers():
    from de3.models.bypass import BlockBypasses

    bypass = BlockBypasses(num_internal=5, hidden_size=8, block_size=2, rank=2)
    assert len(bypass.blocks) == 3 and [bypass.block_of(i) for i in range(5)] == [0, 0, 1, 1, 2]
    with pytest.raises(De3Error, match="block_size"):
        BlockBypasses(5, 8, block_size=0)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_recipe_composes_and_runs(tiny_config, tmp_path, method):
    cfg = tiny_config(f"experiment={method}", "task=rte", "backbone.config_overrides.num_hidden_layers=3")
    assert cfg.exit.rule == {"deebert": "entropy", "pabee": "patience", "pcee": "pcee", "fastbert": "entropy"}.get(
        method, "dge" if method == "badge" else "edr"
    )
    train(cfg)
    for name in ("results.json", "sweep.csv", "summary.md", "thresholds.json", "sweep.png"):
        assert (tmp_path / name).is_file(), name
    assert cfg.exit.rule in json.loads((tmp_path / "thresholds.json").read_text())["rules"]


def test_de3_combines_with_bypasses(tiny_config, tmp_path):
    cfg = tiny_config("task=rte", "loss=de3", "model.bypass.enabled=true")
    module = instantiate(cfg.model)
    assert module.model.prototypes is not None and module.model.bypass is not None
    train(cfg)
    assert "| edr |" in (tmp_path / "summary.md").read_text()


def test_no_stage_one_checkpoint_is_kept_as_the_best(tiny_config, tmp_path):
    # fake RTE: 24 pairs in batches of 8 → 3 steps per epoch; stage 2 begins with epoch 2
    cfg = tiny_config("experiment=deebert", "task=rte", "trainer.max_steps=-1", "trainer.max_epochs=2")
    train(cfg)
    best = Path(json.loads((tmp_path / "results.json").read_text())["checkpoint"])
    assert best.name.startswith("epoch01-")  # epoch 1 scored −∞: its internal exits were untrained


@pytest.mark.parametrize("detach_backbone", [False, True])
def test_bypass_option_stops_internal_exit_gradients_at_the_block_boundary(detach_backbone):
    tokenizer, encoder = tiny_bert_encoder()
    batch = tokenizer(["one", "two words"], padding=True, return_tensors="pt")
    bypass = {"enabled": True, "rank": 4, "detach_backbone": detach_backbone}
    model = MultiExitModel(EncoderBackbone(encoder), 2, bypass=bypass)
    for block in model.bypass.blocks:  # W_up = 0 would hide the bypass's own gradient path
        torch.nn.init.normal_(block.up.weight)
    model(**batch).logits[0].sum().backward()  # the internal exit's loss alone
    backbone = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    reached = sum(g.abs().sum().item() for g in backbone if g is not None)
    assert (reached == 0) == detach_backbone  # default: the residual path reaches the layers
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.bypass.blocks[0].down.parameters())
    assert model.exits[0].dense.weight.grad.abs().sum() > 0
