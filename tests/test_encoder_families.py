"""Every supported encoder family, through its tiny random config (`backbone=tiny_<family>`):
every layer equal to Hugging Face's own forward (perturbed weights, a padded batch, each
family's own parts switched on), real early exit equal to the simulated sweep, a
`loss=de3` run that writes its sweep, a checkpoint that reloads and predicts; and the public
configs' clear error where their weights cannot be had."""

import copy
import json

import pytest
import torch
from huggingface_hub import constants
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import AutoModel, FunnelConfig, FunnelModel

from de3.data.datamodule import TextTaskDataModule
from de3.errors import De3Error, find_user_error
from de3.jobs import train
from de3.models.backbone import EncoderBackbone, load_encoder, load_tokenizer
from de3.predictor import EarlyExitPredictor
from tests.conftest import REPO
from tests.test_predictor import assert_real_equals_simulated, make_module

FAMILIES = ["albert", "distilbert", "deberta", "electra", "xlmr", "mpnet", "modernbert"]


def backbone_config(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "backbone" / f"{name}.yaml"))


# What each family's tiny parity model adds to its `backbone=tiny_<family>` config, so that the
# family's own parts run: ALBERT two layer groups of two inner layers each (layer m must pick its
# group), DeBERTa a first-layer convolution and log-bucketed relative positions (t > 4).
PARITY_OVERRIDES = {
    "albert": {"num_hidden_layers": 4, "num_hidden_groups": 2, "inner_group_num": 2},
    "deberta": {"conv_kernel_size": 3, "position_buckets": 8},
}


def perturbed_encoder(family: str):
    """The family's tiny parity encoder (tokenizer, model) with seeded noise on every parameter:
    freshly initialised LayerNorm biases and padding embeddings are zero, which would hide a
    dropped mask or a skipped part."""
    config = backbone_config(f"tiny_{family}")
    config["config_overrides"] |= PARITY_OVERRIDES.get(family, {})
    tokenizer = load_tokenizer(**config)
    encoder = load_encoder(**config, tokenizer=tokenizer).eval()
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=noise))
    return tokenizer, encoder


def hf_layer_outputs(encoder, batch) -> list[torch.Tensor]:
    """Every layer's output by the model's own forward (the last one after the family's final
    norm, as `last_hidden_state`): ALBERT records each inner layer, so keep each group's last."""
    output = encoder(**batch, output_hidden_states=True)
    states = list(output.hidden_states[1:])
    inner = encoder.config.inner_group_num if encoder.config.model_type == "albert" else 1
    states = states[inner - 1 :: inner]
    torch.testing.assert_close(states[-1], output.last_hidden_state, rtol=0, atol=0)
    return states


@pytest.mark.parametrize("family", ["bert", "roberta", *FAMILIES])
def test_every_layer_equals_hf_forward_with_padding(family):
    tokenizer, encoder = perturbed_encoder(family)
    reference = copy.deepcopy(encoder)
    texts = ["a short one", "a much longer sentence with padding behind it", "in between"], ["pair", "b", "c d"]
    batch = tokenizer(*texts, padding=True, return_tensors="pt")
    assert not batch["attention_mask"].all()
    backbone = EncoderBackbone(encoder)
    with torch.no_grad():
        expected = hf_layer_outputs(reference, batch)
        hidden = backbone.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        inputs = backbone.layer_inputs(hidden, batch["attention_mask"])
        outputs = []
        for index in range(backbone.num_layers):
            hidden = backbone.layer(index, hidden, inputs)
            outputs.append(hidden)
        exit_views = backbone(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    assert len(outputs) == len(expected) == backbone.num_layers
    for ours, theirs in zip([*outputs[:-1], exit_views[-1]], expected):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    for view, output in zip(exit_views, outputs):
        torch.testing.assert_close(view, backbone.exit_view(output), rtol=0, atol=0)


@pytest.mark.parametrize("family, has_pooler", [("bert", True), ("albert", True), ("mpnet", True), ("deberta", False)])
def test_pretrained_pooler_is_exposed_but_not_part_of_the_model(family, has_pooler):
    config = backbone_config(f"tiny_{family}")
    random_init = load_encoder(**config, tokenizer=load_tokenizer(**config))
    assert EncoderBackbone(random_init).pretrained_pooler is None  # a random pooler is no pretrained one
    encoder = AutoModel.from_config(random_init.config)  # as if loaded with its pooler's weights
    pooler = getattr(encoder, "pooler", None)
    backbone = EncoderBackbone(encoder)
    assert encoder.pooler is None if has_pooler else backbone.pretrained_pooler is None
    if has_pooler:
        assert isinstance(backbone.pretrained_pooler, torch.nn.Linear)
        assert backbone.pretrained_pooler in (pooler, getattr(pooler, "dense", None))
    assert not any("pooler" in name for name in backbone.state_dict())


def test_unknown_family_lists_the_supported_ones():
    with pytest.raises(De3Error, match="not a supported encoder family; de3 supports model_type albert, bert, deberta"):
        EncoderBackbone(torch.nn.Linear(2, 2))


def test_saved_model_of_another_family_is_refused_before_anything_loads(tiny_config, tmp_path, monkeypatch):
    funnel = FunnelConfig(vocab_size=40, d_model=32, n_head=2, d_head=16, d_inner=64, block_sizes=[1, 1])
    FunnelModel(funnel).save_pretrained(tmp_path / "funnel")
    for loader in ("AutoTokenizer", "AutoModel"):
        monkeypatch.setattr(f"de3.models.backbone.{loader}.from_pretrained", pytest.fail)
    cfg = tiny_config(f"backbone.path={tmp_path / 'funnel'}", "backbone.model_type=null", "backbone.random_init=false")
    with pytest.raises(Exception) as info:
        instantiate(cfg.model)
    message = str(find_user_error(info.value))
    assert f"backbone 'tiny_bert' at {tmp_path / 'funnel'} (model_type 'funnel') is not a supported" in message
    assert "de3 supports model_type albert, bert, deberta-v2, distilbert" in message


@pytest.mark.parametrize("family", FAMILIES)
def test_real_exit_matches_simulation(family, glue_dir):
    """One rule on the logits, one on prototype distances (every rule: tests/test_predictor.py)."""
    module = make_module("rte", backbone_config(f"tiny_{family}"))
    dm = TextTaskDataModule(module.task, module.tokenizer, data_dir=glue_dir, source="local", eval_batch_size=4)
    dm.setup("validate")
    checked = assert_real_equals_simulated(module, dm.val_dataloader()[0], (0.3, 0.6), rules=("entropy", "edr"))
    assert checked == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_de3_run_writes_its_sweep_and_its_checkpoint_predicts(family, tiny_config, tmp_path):
    fast = ["trainer.max_steps=3", "data.train_limit=24", "data.eval_limit=16", "callbacks.prototype_projection=null"]
    train(tiny_config("task=rte", "loss=de3", f"backbone=tiny_{family}", *fast))
    sweep = (tmp_path / "sweep.csv").read_text().splitlines()
    assert any(",edr," in row for row in sweep[1:])
    checkpoint = json.loads((tmp_path / "results.json").read_text())["checkpoint"]
    predictor = EarlyExitPredictor.from_checkpoint(checkpoint, "edr", threshold=0.5)
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    for name, tensor in predictor.model.state_dict().items():
        torch.testing.assert_close(tensor, state[f"model.{name}"], rtol=0, atol=0)
    out = predictor.predict([("A man sleeps.", "Someone rests."), ("It rains.", "The street is wet.")])
    assert out.prediction.tolist() in ([0, 0], [0, 1], [1, 0], [1, 1])
    assert ((out.exit_layer >= 1) & (out.exit_layer <= 2)).all()


@pytest.mark.parametrize("name", ["bert", "roberta", *FAMILIES])
def test_public_config_without_local_weights_is_a_clear_error(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without network, whatever this one has
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    config = backbone_config(name)
    with pytest.raises(De3Error, match=f"{config['path']}' is not a local directory and could not be fetched"):
        load_encoder(**config)
