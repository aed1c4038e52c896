"""Character-level tokenizers for random-weight test models, built in memory (no files, no hub).

They keep the special-token layout of the real tokenizers (BERT: [CLS] a [SEP] b [SEP] with
token types; RoBERTa: <s> a </s></s> b </s>), so tiny models exercise the same code paths.
`CHAR_TOKENIZERS` gives each supported `model_type` the layout of its real tokenizer.
"""

from __future__ import annotations

import string
from functools import partial

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.pre_tokenizers import ByteLevel
from transformers import PreTrainedTokenizerFast

_CHARACTERS = string.ascii_lowercase + string.digits + string.punctuation


def bert_char_tokenizer(token_types: bool = True) -> PreTrainedTokenizerFast:
    """An uncased WordPiece tokenizer whose vocabulary is single characters; `token_types`:
    whether it returns token_type_ids (DistilBERT's and ModernBERT's do not)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(specials + list(_CHARACTERS) + [f"##{c}" for c in _CHARACTERS])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=1000))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"]
        if token_types
        else ["input_ids", "attention_mask"],
    )


def roberta_char_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: every byte is a token."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {token: i for i, token in enumerate(specials + sorted(ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"],
    )


CHAR_TOKENIZERS = {
    "bert": bert_char_tokenizer,
    "albert": bert_char_tokenizer,
    "electra": bert_char_tokenizer,
    "deberta-v2": bert_char_tokenizer,
    "distilbert": partial(bert_char_tokenizer, token_types=False),
    "modernbert": partial(bert_char_tokenizer, token_types=False),
    "roberta": roberta_char_tokenizer,
    "xlm-roberta": roberta_char_tokenizer,
    "mpnet": roberta_char_tokenizer,
}
