"""The backbone adapter: loading (errors, pooler, dtype) and MiniLM's real weights against Hugging Face
(every family's layer-by-layer parity: tests/test_encoder_families.py)."""

import io

import pytest
import sentencepiece
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import AutoModel, DebertaV2Config

from de3.errors import De3Error
from de3.models.backbone import EncoderBackbone, load_encoder, load_tokenizer
from tests.conftest import MINILM_DIR, REPO, needs_minilm, tiny_bert_encoder


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


def test_fp16_stored_weights_load_in_float32_unless_asked(tmp_path):
    tokenizer, encoder = tiny_bert_encoder()
    encoder.half().save_pretrained(tmp_path)
    dtypes = {
        dtype: {p.dtype for p in load_encoder("tiny", path=str(tmp_path), dtype=dtype).parameters()}
        for dtype in ("float32", "bfloat16", "auto")
    }
    assert dtypes == {"float32": {torch.float32}, "bfloat16": {torch.bfloat16}, "auto": {torch.float16}}
    rebuilt = load_encoder("tiny", path=str(tmp_path), random_init=True)  # as a checkpoint is reloaded
    assert {p.dtype for p in rebuilt.parameters()} == {torch.float32}
    with pytest.raises(
        De3Error, match=r"dtype must be one of \['float32', 'bfloat16', 'float16', 'auto'\], got 'fp16'"
    ):
        load_encoder("tiny", path=str(tmp_path), dtype="fp16")


def test_every_backbone_config_defaults_to_float32_and_the_command_line_changes_it(tiny_config):
    assert {OmegaConf.load(file).dtype for file in (REPO / "conf" / "backbone").glob("*.yaml")} == {"float32"}
    module = instantiate(tiny_config("backbone.dtype=bfloat16").model)
    assert {p.dtype for p in module.model.backbone.parameters()} == {torch.bfloat16}


def saved_deberta_v3_tokenizer(directory):
    """A DeBERTa-v3 layout: config.json and, as its only tokenizer file, a tiny spm.model."""
    DebertaV2Config(vocab_size=16, hidden_size=32, num_attention_heads=2).save_pretrained(directory)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["a short one", "the cat sat on the mat"] * 20),
        model_writer=model,
        vocab_size=16,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="[PAD]",
        bos_piece="[CLS]",
        eos_piece="[SEP]",
        unk_piece="[UNK]",
        minloglevel=2,
    )
    (directory / "spm.model").write_bytes(model.getvalue())


def test_sentencepiece_only_tokenizer_loads_or_names_the_missing_package(tmp_path, monkeypatch):
    saved_deberta_v3_tokenizer(tmp_path)
    tokenizer = load_tokenizer("deberta", path=str(tmp_path))
    assert tokenizer("a cat")["input_ids"][0] == tokenizer.cls_token_id == 1
    monkeypatch.setattr("de3.models.backbone.is_sentencepiece_available", lambda: False)
    with pytest.raises(De3Error, match=r"SentencePiece model \(spm.model\), which needs the sentencepiece package"):
        load_tokenizer("deberta", path=str(tmp_path))


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
