"""The backbone adapter: loading (errors, pooler, dtype) and MiniLM's real weights against Hugging Face
(every family's layer-by-layer parity: tests/test_encoder_families.py)."""

import pytest
import torch
from transformers import AutoModel

from de3.errors import De3Error
from de3.models.backbone import EncoderBackbone, load_encoder, load_tokenizer
from tests.conftest import MINILM_DIR, needs_minilm, tiny_bert_encoder


def _batch(tokenizer):
    return tokenizer(
        ["a short one", "a much longer sentence with padding behind it"],
        ["pair", "b"],
        padding=True,
        return_tensors="pt",
    )


def test_random_tiny_encoder_from_model_type():
    tokenizer, encoder = tiny_bert_encoder()
    backbone = EncoderBackbone(encoder)
    assert backbone.num_layers == 2 and backbone.hidden_size == 32
    assert encoder.config.vocab_size == len(tokenizer)
    assert encoder.pooler is None


def test_missing_model_errors_name_where_they_looked(tmp_path):
    with pytest.raises(De3Error, match=f"backbone 'bert': no local directory at {tmp_path}/missing"):
        load_encoder("bert", path=str(tmp_path / "missing"))
    with pytest.raises(De3Error, match="no path, and model_type 'gpt9'"):
        load_tokenizer("x", model_type="gpt9")
    with pytest.raises(De3Error, match="pretrained weights need backbone.path"):
        load_encoder("x", model_type="bert")


@needs_minilm
def test_real_minilm_matches_hf_forward():
    tokenizer = load_tokenizer("minilm", path=str(MINILM_DIR))
    encoder = load_encoder("minilm", path=str(MINILM_DIR)).eval()
    reference = AutoModel.from_pretrained(MINILM_DIR).eval()
    batch = _batch(tokenizer)
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
        ours = EncoderBackbone(encoder)(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert len(ours) == 6
    torch.testing.assert_close(ours[-1], expected, rtol=0, atol=0)
