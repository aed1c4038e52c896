"""Backbone: a Hugging Face encoder of any supported family, run one layer at a time.

Loading accepts a local directory, a hub id (where the hub is reachable), or no path at all
with a `model_type` for random-weight test models; failures name what was looked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import is_sentencepiece_available

from de3.errors import De3Error
from de3.flops import LayerCost
from de3.hub import hub_unreachable, looks_like_path
from de3.models.char_tokenizer import CHAR_TOKENIZERS
from de3.models.encoder_families import LayerInputs, family_for, require_supported


def _from_pretrained(loader: Any, name: str, path: str, **kwargs: Any) -> Any:
    """Call `loader.from_pretrained(path)`, turning every failure into one clear De3Error."""
    expanded = os.path.expanduser(path)
    if os.path.isdir(expanded):
        try:
            return loader.from_pretrained(expanded, **kwargs)
        except (OSError, ValueError) as err:
            raise De3Error(f"backbone {name!r}: cannot load from local directory {expanded}: {err}") from None
    if looks_like_path(path):
        raise De3Error(f"backbone {name!r}: no local directory at {expanded} (set backbone.path)")
    hub_unreachable()  # if so, Hugging Face's offline mode: the cache or an error at once, no retries
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise De3Error(
            f"backbone {name!r}: {path!r} is not a local directory and could not be fetched from the "
            f"Hugging Face hub ({first_line}). Download it where the hub is reachable and set "
            f"backbone.path=/that/directory"
        ) from None


def _require_supported_path(name: str, path: str) -> None:
    """Stop before the tokenizer or weights load when the model at `path` is of a family de3 has
    no adapter for (its config read as saved: another family may refuse de3's overrides)."""
    require_supported(_from_pretrained(AutoConfig, name, path).model_type, f"backbone {name!r} at {path}")


def _require_sentencepiece(name: str, path: str) -> None:
    """A local tokenizer saved only as a SentencePiece model (DeBERTa-v3's spm.model, no
    tokenizer.json) needs the `sentencepiece` package: without it transformers falls back to
    reading the file as tiktoken's and names that package instead."""
    directory = Path(path).expanduser()
    if is_sentencepiece_available() or not directory.is_dir() or (directory / "tokenizer.json").is_file():
        return
    models = sorted(file.name for file in directory.glob("*.model"))
    if models:
        raise De3Error(
            f"backbone {name!r}: the tokenizer in {directory} is a SentencePiece model ({', '.join(models)}), "
            f"which needs the sentencepiece package: pip install sentencepiece"
        )


def load_tokenizer(
    name: str, path: str | None = None, model_type: str | None = None, **_: Any
) -> PreTrainedTokenizerBase:
    """The backbone's tokenizer; random-weight models without a path get a character tokenizer."""
    if path is not None:
        _require_supported_path(name, path)
        _require_sentencepiece(name, path)
        return _from_pretrained(AutoTokenizer, name, path)
    if model_type not in CHAR_TOKENIZERS:
        raise De3Error(
            f"backbone {name!r}: no path, and model_type {model_type!r} has no built-in tokenizer "
            f"(choose from {sorted(CHAR_TOKENIZERS)} or set backbone.path)"
        )
    return CHAR_TOKENIZERS[model_type]()


DTYPES = ("float32", "bfloat16", "float16", "auto")


def _dtype_argument(name: str, dtype: str) -> dict[str, torch.dtype]:
    """`backbone.dtype` as transformers' `dtype` argument; "auto" passes none, which keeps the
    dtype the checkpoint's config records (transformers 5's default, so an fp16-stored copy
    would train with fp16 master weights)."""
    if dtype not in DTYPES:
        raise De3Error(f"backbone {name!r}: dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return {} if dtype == "auto" else {"dtype": getattr(torch, dtype)}


def load_encoder(
    name: str,
    path: str | None = None,
    model_type: str | None = None,
    random_init: bool = False,
    config_overrides: Mapping[str, Any] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    dtype: str = "float32",
    **_: Any,
) -> PreTrainedModel:
    """A Hugging Face encoder (`AutoModel`): pretrained weights from `path`, or random weights
    (`random_init`) from `path`'s config or from `model_type` with `config_overrides`; its
    weights in `dtype` (float32 by default, as Hugging Face's Trainer keeps master weights,
    whatever the checkpoint stores; "auto": as stored)."""
    dtype_argument = _dtype_argument(name, dtype)
    overrides = dict(config_overrides or {})
    if path is None:
        if model_type is None:
            raise De3Error(f"backbone {name!r}: set backbone.path (a local directory or hub id) or backbone.model_type")
        if tokenizer is not None:
            overrides.setdefault("vocab_size", len(tokenizer))
            overrides.setdefault("pad_token_id", tokenizer.pad_token_id)
        require_supported(model_type, f"backbone {name!r}")
        config = AutoConfig.for_model(model_type, **overrides)
    else:
        _require_supported_path(name, path)
        config = _from_pretrained(AutoConfig, name, path, **overrides)
    if random_init:
        return _without_pooler(AutoModel.from_config(config, **dtype_argument))
    if path is None:
        raise De3Error(f"backbone {name!r}: pretrained weights need backbone.path (or set backbone.random_init=true)")
    encoder, loading = _from_pretrained(
        AutoModel, name, path, config=config, output_loading_info=True, **dtype_argument
    )
    if any(key.startswith("pooler.") for key in loading["missing_keys"]):
        return _without_pooler(encoder)
    return encoder


def _without_pooler(encoder: PreTrainedModel) -> PreTrainedModel:
    """Drop a pooler whose weights are random (not in the loaded weights): an encoder that
    `load_encoder` returns has a pooler only where that pooler was trained."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


class EncoderBackbone(nn.Module):
    """Layer-by-layer access to a Hugging Face encoder of any supported family (the seam
    between de3 and the families' adapters in de3/models/encoder_families.py).

    `embed` → hidden states of the embedding layer; `layer_inputs` → what every layer takes
    besides them (masks, position terms); `layer(m, ...)` runs layer m (0-based); `exit_view`
    → what the model's head, and so every exit, reads from a layer's output. Running them in
    turn computes exactly what the Hugging Face model's forward computes.
    `pretrained_pooler` is the dense layer of the family's pretrained pooler (tanh follows
    it), or None: kept outside the module tree, neither trained nor saved.
    """

    def __init__(self, encoder: PreTrainedModel) -> None:
        super().__init__()
        self.family = family_for(encoder)
        self.__dict__["pretrained_pooler"] = self.family.take_pooler()  # bypasses submodule registration
        self.encoder = encoder
        self.config = encoder.config

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def layer_costs(self) -> list[LayerCost]:
        """Multiply-adds of every layer by the family's formula (de3/flops.py)."""
        return self.family.layer_costs()

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B, T] token ids → [B, T, H] embedding-layer output (projected to the hidden size)."""
        return self.family.embed(input_ids, attention_mask, token_type_ids)

    def layer_inputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> LayerInputs:
        """Embedding output and [B, T] 0/1 padding mask → what the layers take besides the hidden states."""
        return self.family.layer_inputs(hidden, attention_mask)

    def layer(self, index: int, hidden: torch.Tensor, inputs: LayerInputs) -> torch.Tensor:
        """Run layer `index` (0-based): [B, T, H] → [B, T, H]."""
        return self.family.layer(index, hidden, inputs)

    def exit_view(self, hidden: torch.Tensor) -> torch.Tensor:
        """A layer's output → what the exits read (after the family's final norm, if it has one)."""
        return self.family.exit_view(hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """What every layer's exit reads: a list of L tensors [B, T, H] (the embeddings excluded)."""
        hidden = self.embed(input_ids, attention_mask, token_type_ids)
        inputs = self.layer_inputs(hidden, attention_mask)
        states = []
        for index in range(self.num_layers):
            hidden = self.layer(index, hidden, inputs)
            states.append(self.exit_view(hidden))
        return states
