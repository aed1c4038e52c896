"""Backbone adapter: any BERT-family Hugging Face encoder, run one layer at a time.

Loading accepts a local directory, a hub id (where the hub is reachable), or no path at all
with a `model_type` for random-weight test models; failures name what was looked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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
from transformers.masking_utils import create_bidirectional_mask

from de3.errors import De3Error
from de3.hub import hub_unreachable
from de3.models.char_tokenizer import CHAR_TOKENIZERS


def _looks_like_path(path: str) -> bool:
    return path.startswith((".", "/", "~")) or os.sep in path.strip("/") and path.count("/") > 1


def _from_pretrained(loader: Any, name: str, path: str, **kwargs: Any) -> Any:
    """Call `loader.from_pretrained(path)`, turning every failure into one clear De3Error."""
    expanded = os.path.expanduser(path)
    if os.path.isdir(expanded):
        try:
            return loader.from_pretrained(expanded, **kwargs)
        except (OSError, ValueError) as err:
            raise De3Error(f"backbone {name!r}: cannot load from local directory {expanded}: {err}") from None
    if _looks_like_path(path):
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


def load_tokenizer(
    name: str, path: str | None = None, model_type: str | None = None, **_: Any
) -> PreTrainedTokenizerBase:
    """The backbone's tokenizer; random-weight models without a path get a character tokenizer."""
    if path is not None:
        return _from_pretrained(AutoTokenizer, name, path)
    if model_type not in CHAR_TOKENIZERS:
        raise De3Error(
            f"backbone {name!r}: no path, and model_type {model_type!r} has no built-in tokenizer "
            f"(choose from {sorted(CHAR_TOKENIZERS)} or set backbone.path)"
        )
    return CHAR_TOKENIZERS[model_type]()


def load_encoder(
    name: str,
    path: str | None = None,
    model_type: str | None = None,
    random_init: bool = False,
    config_overrides: Mapping[str, Any] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    **_: Any,
) -> PreTrainedModel:
    """A Hugging Face encoder (`AutoModel`): pretrained weights from `path`, or random weights
    (`random_init`) from `path`'s config or from `model_type` with `config_overrides`."""
    overrides = dict(config_overrides or {})
    if path is None:
        if model_type is None:
            raise De3Error(f"backbone {name!r}: set backbone.path (a local directory or hub id) or backbone.model_type")
        if tokenizer is not None:
            overrides.setdefault("vocab_size", len(tokenizer))
            overrides.setdefault("pad_token_id", tokenizer.pad_token_id)
        config = AutoConfig.for_model(model_type, **overrides)
    else:
        config = _from_pretrained(AutoConfig, name, path, **overrides)
    if random_init:
        return _without_pooler(AutoModel.from_config(config))
    if path is None:
        raise De3Error(f"backbone {name!r}: pretrained weights need backbone.path (or set backbone.random_init=true)")
    encoder, loading = _from_pretrained(AutoModel, name, path, config=config, output_loading_info=True)
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
    """Layer-by-layer access to a BERT-family encoder (BERT, RoBERTa, MiniLM, ELECTRA, ...).

    `embed` → hidden states of the embedding layer; `attention_mask_for` → the mask in the
    form the encoder's attention implementation expects; `layer(m, ...)` runs layer m (0-based).
    Running them in turn computes exactly what the Hugging Face model's forward computes.
    `pretrained_pooler` is the state dict of the encoder's trained pooler dense layer (None
    when it has none), kept for exits to start from; the pooler module itself is dropped.
    """

    def __init__(self, encoder: PreTrainedModel) -> None:
        super().__init__()
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        if not hasattr(encoder, "embeddings") or not isinstance(layers, nn.ModuleList):
            raise De3Error(
                f"{type(encoder).__name__} is not a BERT-family encoder (it needs .embeddings and "
                ".encoder.layer); de3 supports BERT, RoBERTa and models of the same layout"
            )
        dense = getattr(getattr(encoder, "pooler", None), "dense", None)
        self.pretrained_pooler: dict[str, torch.Tensor] | None = (
            {key: value.detach().clone() for key, value in dense.state_dict().items()}
            if isinstance(dense, nn.Linear)
            else None
        )
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # exits have their own poolers; an unused one would break DDP
        self.encoder = encoder
        self.config = encoder.config

    @property
    def num_layers(self) -> int:
        return len(self.encoder.encoder.layer)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T] token ids → [B, T, H] embedding-layer output."""
        return self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def attention_mask_for(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """[B, T] 0/1 padding mask → what the layers take (None when nothing is padded, under SDPA)."""
        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)

    def layer(self, index: int, hidden: torch.Tensor, layer_mask: torch.Tensor | None) -> torch.Tensor:
        """Run layer `index` (0-based): [B, T, H] → [B, T, H]."""
        return self.encoder.encoder.layer[index](hidden, layer_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Every layer's hidden states: a list of L tensors [B, T, H] (the embeddings excluded)."""
        hidden = self.embed(input_ids, token_type_ids)
        layer_mask = self.attention_mask_for(hidden, attention_mask)
        states = []
        for index in range(self.num_layers):
            hidden = self.layer(index, hidden, layer_mask)
            states.append(hidden)
        return states
