"""The FLOPs model: each family's layer formula, by hand on tiny configs and against torch's
FLOP counter, and exits at layers of different costs."""

from dataclasses import replace

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from de3.flops import FlopsModel, LayerCost
from de3.models.backbone import EncoderBackbone, load_encoder, load_tokenizer
from tests.conftest import REPO

FAMILIES = ["bert", "roberta", "albert", "distilbert", "deberta", "electra", "xlmr", "mpnet", "modernbert"]


def tiny_backbone(family: str, **overrides) -> EncoderBackbone:
    """`backbone=tiny_<family>` (hidden 32, feed-forward 64, 2 layers) with `overrides`."""
    config = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "backbone" / f"tiny_{family}.yaml"))
    config["config_overrides"] |= overrides
    return EncoderBackbone(load_encoder(**config, tokenizer=load_tokenizer(**config)).eval())


def flops_at(backbone: EncoderBackbone, tokens: int) -> list[int]:
    return [int(cost.flops(torch.tensor([tokens]))[0]) for cost in backbone.layer_costs()]


# Multiply-adds at t = 10 tokens, h = 32, i = 64; FLOPs are twice them. BERT's layer:
# projections 4h² = 4,096 and feed-forward 2hi = 4,096 per token, 2h = 64 per query-key pair:
# 10 · 8,192 + 100 · 64 = 88,320.
BERT_LAYER = 2 * 88_320


def test_bert_layer_by_hand():
    assert flops_at(tiny_backbone("bert"), 10) == [BERT_LAYER] * 2


def test_albert_layer_runs_its_groups_inner_layers():
    backbone = tiny_backbone("albert", num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2)
    assert flops_at(backbone, 10) == [2 * BERT_LAYER] * 4


def test_modernbert_gated_feed_forward_and_local_window():
    # Gated feed-forward 3hi = 6,144: 10 · (4,096 + 6,144) = 102,400 per layer. Layer 1 attends
    # globally, 100 pairs · 64 = 6,400; layer 2 within local_attention / 2 = 4 positions:
    # 10 + 2 · (9 + 8 + 7 + 6) = 70 pairs · 64 = 4,480.
    assert flops_at(tiny_backbone("modernbert"), 10) == [2 * 108_800, 2 * 106_880]
    assert flops_at(tiny_backbone("modernbert"), 3)[1] == 2 * (3 * 10_240 + 9 * 64)  # the window covers all


def test_deberta_relative_attention_and_convolution():
    # 2k = 16 relative embeddings (position_buckets 8): c2p and p2c each score every token against
    # them, 2 · 16 · 32 = 1,024 per token; the query and key projections of the embeddings,
    # 2 · 16 · 32², once per layer; the first layer's convolution 32² · 3 = 3,072 per token.
    backbone = tiny_backbone("deberta", position_buckets=8, conv_kernel_size=3)
    per_token = 8_192 + 1_024
    fixed = 2 * 16 * 32 * 32
    first, second = 10 * (per_token + 3_072) + 6_400 + fixed, 10 * per_token + 6_400 + fixed
    assert flops_at(backbone, 10) == [2 * first, 2 * second] == [2 * 162_048, 2 * 131_328]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_agrees_with_torchs_flop_counter(family):
    """torch counts the matrix products (and convolutions) of an eager-attention forward, which
    computes every score: a sliding window's masked ones too."""
    backbone = tiny_backbone(family).requires_grad_(False)  # not torch.no_grad: the counter's hooks can fail there
    backbone.encoder.set_attn_implementation("eager")
    input_ids = torch.randint(5, 30, (1, 12))
    mask = torch.ones_like(input_ids)
    hidden = backbone.embed(input_ids, mask)
    inputs = backbone.layer_inputs(hidden, mask)
    counted = []
    for index in range(backbone.num_layers):
        with FlopCounterMode(display=False) as counter:
            hidden = backbone.layer(index, hidden, inputs)
        counted.append(counter.get_total_flops())
    every_score = [replace(cost, window=None) for cost in backbone.layer_costs()]
    assert counted == [int(cost.flops(torch.tensor([12]))[0]) for cost in every_score]


def test_early_exit_counts_the_layers_it_ran():
    costs = FlopsModel(layers=(LayerCost(10, 1), LayerCost(20, 1, window=0), LayerCost(30, 0)), exit_head=7, bypass=3)
    # per layer at t = 2: 2 · (20 + 4), 2 · (40 + 2), 2 · 60
    assert costs.layer_flops(torch.tensor([2]))[:, 0].tolist() == [48, 84, 120]
    assert costs.full_depth(torch.tensor([2])).tolist() == [48 + 84 + 120 + 7]
    early = costs.early_exit(torch.tensor([1, 2, 3]), torch.tensor([2, 2, 2]), uses_prototypes=False)
    assert early.tolist() == [48 + 7 + 3, 48 + 84 + 2 * 7 + 2 * 3, 48 + 84 + 120 + 3 * 7 + 2 * 3]
