"""Stage 2 of the two-stage schemes: trained on cached layer outputs (the same training as
running the frozen backbone at every step, when the backbone has no dropout to differ by), and
started from another run's stage 1 (`loss.stage1_ckpt`)."""

import json

import pytest
import torch
from hydra.utils import instantiate

from de3.errors import De3Error
from de3.jobs import build_datamodule, train
from de3.models.layer_cache import cache_pooled_layers
from tests.conftest import compose_config, trained_weights

NO_DROPOUT = (
    "+backbone.config_overrides.hidden_dropout_prob=0.0",
    "+backbone.config_overrides.attention_probs_dropout_prob=0.0",
    "model.exits.dropout=0.0",
)


@pytest.mark.parametrize("loss", ["distill", "de3_two_stage"])
def test_cached_stage_two_trains_as_the_backbone_would(tiny_config, loss):
    # a large learning rate, so that training on wrongly paired vectors and labels would show
    overrides = (
        "task=rte",
        f"loss={loss}",
        "trainer.max_steps=6",
        "model.bypass.enabled=true",
        "model.optimizer.lr=1e-2",
    )
    overrides += NO_DROPOUT
    cached = trained_weights(tiny_config(*overrides, "loss.cache_layers=true"), max_steps=6)
    uncached = trained_weights(tiny_config(*overrides, "loss.cache_layers=false"), max_steps=6)
    assert cached.keys() == uncached.keys()
    # Layer outputs cached in other batches round differently (one thread: 4e-5 on a bypass weight
    # after 6 steps of DAR); wrongly paired vectors and labels move weights by ~lr = 1e-2.
    for name, tensor in uncached.items():
        torch.testing.assert_close(cached[name], tensor, rtol=1e-4, atol=1e-4, msg=name)


def test_cache_holds_every_example_in_input_order(tiny_config):
    cfg = tiny_config("task=mrpc", *NO_DROPOUT)
    module = instantiate(cfg.model)
    datamodule = build_datamodule(cfg, module.task, module.tokenizer, "fit")
    features = datamodule.datasets["train"]
    cache = cache_pooled_layers(module.model, features, datamodule.collate, batch_size=5)
    module.model.eval()
    for i in (0, len(features) // 2, len(features) - 1):
        one = datamodule.collate([features[i]])
        alone = module.model.pooled_layers(one["input_ids"], one["attention_mask"], one["token_type_ids"])
        torch.testing.assert_close(cache[i], alone[:, 0], rtol=1e-4, atol=1e-5)
    assert module.model.training is False and cache.shape[0] == len(features)


def best_weights(run_dir) -> dict[str, torch.Tensor]:
    checkpoint = json.loads((run_dir / "results.json").read_text())["checkpoint"]
    return torch.load(checkpoint, weights_only=True)["state_dict"]


@pytest.mark.parametrize("loss", ["distill", "de3_two_stage"])
def test_stage_two_from_deeberts_stage_one(tiny_config, tmp_path, loss):
    deebert = tiny_config("task=rte", "loss=two_stage", "trainer.max_steps=6")
    train(deebert)
    base = [o for o in deebert.hydra.overrides.task if not o.startswith("loss=")]
    train(compose_config([*base, f"loss={loss}"], tmp_path / "own"))
    checkpoint = json.loads((tmp_path / "results.json").read_text())["checkpoint"]
    shared = [*base, f"loss={loss}", f"loss.stage1_ckpt={checkpoint}", "trainer.max_steps=3"]
    train(compose_config(shared, tmp_path / "shared"))
    weights = {name: best_weights(d) for name, d in (("deebert", tmp_path), ("own", tmp_path / "own"))}
    weights["shared"] = best_weights(tmp_path / "shared")
    stage_one = [n for n in weights["deebert"] if n.startswith(("model.backbone.", "model.exits.1."))]
    for name in stage_one:  # one stage 1: the scheme's own is DeeBERT's bit for bit, and the shared run keeps it
        assert torch.equal(weights["own"][name], weights["deebert"][name]), name
        assert torch.equal(weights["shared"][name], weights["deebert"][name]), name
    internal = [n for n in weights["deebert"] if n.startswith("model.exits.0.")]
    assert all(not torch.equal(weights["shared"][n], weights["deebert"][n]) for n in internal)
    if loss == "de3_two_stage":  # stage 2 fitted the prototypes
        assert weights["shared"]["model.prototypes.initialized"].all()

    other_task = instantiate(compose_config([*shared, "task=mrpc"], tmp_path / "mismatched").model)
    with pytest.raises(De3Error, match="loss.stage1_ckpt .* has task.name='rte', this run 'mrpc'"):
        other_task.load_stage_one(checkpoint)


def test_two_stage_de3_on_a_joint_schemes_checkpoint(tiny_config, tmp_path):
    # any multi-exit checkpoint of the task and backbone: its backbone and final exit are kept,
    # the internal exits, mapping layers and prototypes are fitted on the frozen backbone
    pabee = tiny_config("task=rte", "experiment=pabee")
    train(pabee)
    checkpoint = json.loads((tmp_path / "results.json").read_text())["checkpoint"]
    base = [o for o in pabee.hydra.overrides.task if not o.startswith("experiment=")]
    fitted = [*base, "experiment=de3_two_stage", f"loss.stage1_ckpt={checkpoint}", "trainer.max_steps=3"]
    train(compose_config(fitted, tmp_path / "de3"))
    joint, de3 = best_weights(tmp_path), best_weights(tmp_path / "de3")
    kept = [n for n in joint if n.startswith(("model.backbone.", "model.exits.1."))]
    assert kept and all(torch.equal(de3[n], joint[n]) for n in kept)
    internal = [n for n in joint if n.startswith("model.exits.0.")]
    assert all(not torch.equal(de3[n], joint[n]) for n in internal)  # trained from their own initialisation
    assert de3["model.prototypes.initialized"].all()
    assert "| edr |" in (tmp_path / "de3" / "summary.md").read_text()
