"""Exits start from the backbone's pretrained pooler (DeeBERT's highway exits do), where it has one and
the exits read the first token as it did."""

import logging

import pytest
import torch
from transformers import BertConfig, BertModel

from de3.models.backbone import EncoderBackbone, load_encoder
from de3.models.exits import pool
from de3.models.multi_exit import MultiExitModel
from tests.conftest import tiny_bert_encoder

TINY = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def saved_bert(directory, with_pooler: bool):
    torch.manual_seed(0)
    reference = BertModel(TINY, add_pooling_layer=with_pooler).eval()
    reference.save_pretrained(directory)
    return reference


@pytest.mark.parametrize("init_from_pooler", [True, False])
def test_last_exit_starts_as_the_pretrained_pooler(tmp_path, init_from_pooler):
    reference = saved_bert(tmp_path, with_pooler=True)
    torch.manual_seed(1)
    model = MultiExitModel(
        EncoderBackbone(load_encoder("tiny", path=str(tmp_path))), 2, init_from_pooler=init_from_pooler
    ).eval()
    input_ids, mask = (
        torch.tensor([[2, 7, 9, 3, 0], [2, 11, 3, 0, 0]]),
        torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]),
    )
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=mask).pooler_output
        cls = pool(model.backbone(input_ids, mask)[-1], mask, "cls")
        starts = [torch.tanh(head.dense(cls)) for head in model.exits]
    assert model.backbone.encoder.pooler is None  # the module is dropped, its weights kept
    for start in starts:
        assert torch.allclose(start, expected, atol=1e-6) == init_from_pooler


def test_exits_reading_the_token_mean_do_not_start_as_the_first_token_pooler(tmp_path, caplog):
    saved_bert(tmp_path, with_pooler=True)
    backbone = EncoderBackbone(load_encoder("tiny", path=str(tmp_path)))
    pooler = backbone.pretrained_pooler.weight
    with caplog.at_level(logging.INFO, logger="de3.models.multi_exit"):
        mean = MultiExitModel(backbone, 2, pooling="mean")
    assert not any(torch.equal(head.dense.weight, pooler) for head in mean.exits)
    assert [r.getMessage() for r in caplog.records] == [
        "exits start with random dense layers, not the pretrained pooler: it was trained on the first token "
        "and the exits read the mean pooling"
    ]
    assert all(torch.equal(head.dense.weight, pooler) for head in MultiExitModel(backbone, 2, pooling="cls").exits)


def test_no_pooler_to_start_from_when_weights_hold_none_or_are_random(tmp_path):
    saved_bert(tmp_path, with_pooler=False)  # the weights have no pooler: transformers would make a random one
    assert EncoderBackbone(load_encoder("tiny", path=str(tmp_path))).pretrained_pooler is None
    assert EncoderBackbone(tiny_bert_encoder()[1]).pretrained_pooler is None  # random weights
    torch.manual_seed(0)
    model = MultiExitModel(EncoderBackbone(tiny_bert_encoder()[1]), 2)
    assert not torch.equal(model.exits[0].dense.weight, model.exits[1].dense.weight)  # each its own random init


def test_config_default_is_on(tiny_config):
    assert tiny_config().model.exits.init_from_pooler is True
