"""One small adapter per Hugging Face encoder family, chosen by `config.model_type`.

Each adapter runs its family's model one layer at a time with the same operations the
model's own `forward` performs (embeddings, the masks and position terms its layers take,
layer m, a final norm), so that running them in turn gives the model's hidden states exactly.
The rest of de3 sees them only through `EncoderBackbone` (de3/models/backbone.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask

from de3.errors import De3Error
from de3.flops import LayerCost


@dataclass
class LayerInputs:
    """What a family's layers take besides the hidden states: `per_sample` tensors (batch
    first, or None; real early exit keeps only the rows of samples still running) and
    `shared` values that do not depend on the sample (relative positions, rotary tables)."""

    per_sample: dict[str, torch.Tensor | None] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)

    def select(self, rows: torch.Tensor) -> LayerInputs:
        """The inputs of the samples at `rows` only."""
        kept = {name: None if value is None else value[rows] for name, value in self.per_sample.items()}
        return LayerInputs(kept, self.shared)


class EncoderFamily:
    """BERT's layout: `.embeddings`, `.encoder.layer[m](hidden, mask)`, an optional pooler
    with a dense layer; RoBERTa, XLM-R and ELECTRA (with its embedding projection) share it."""

    model_types: tuple[str, ...] = ("bert", "roberta", "xlm-roberta", "electra")

    def __init__(self, encoder: PreTrainedModel) -> None:
        self.encoder = encoder

    def take_pooler(self) -> nn.Linear | None:
        """Detach the pretrained pooler from the encoder (exits have their own; an unused one
        would break DDP) and return its dense layer (tanh follows it), or None."""
        pooler = getattr(self.encoder, "pooler", None)
        if pooler is None:
            return None
        self.encoder.pooler = None
        return pooler.dense

    def intermediate_size(self) -> int:
        return self.encoder.config.intermediate_size

    def plain_layer_cost(self) -> LayerCost:
        """BERT's layer: query, key, value and output projections (4h² per token), a two-matrix
        feed-forward (2hi), attention scores and their weighted sum (2h per query-key pair)."""
        h = self.encoder.config.hidden_size
        return LayerCost(per_token=4 * h * h + 2 * h * self.intermediate_size(), per_pair=2 * h)

    def layer_costs(self) -> list[LayerCost]:
        """Multiply-adds of every layer, in order (de3/flops.py)."""
        return [self.plain_layer_cost()] * self.encoder.config.num_hidden_layers

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        hidden = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        projection = getattr(self.encoder, "embeddings_project", None)  # ELECTRA with embedding_size ≠ hidden
        return hidden if projection is None else projection(hidden)

    def padding_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """The model's own mask (None when nothing is padded, under SDPA)."""
        config = self.encoder.config
        return create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=attention_mask)

    def layer_inputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> LayerInputs:
        return LayerInputs({"mask": self.padding_mask(hidden, attention_mask)})

    def layer(self, index: int, hidden: torch.Tensor, inputs: LayerInputs) -> torch.Tensor:
        return self.encoder.encoder.layer[index](hidden, inputs.per_sample["mask"])

    def exit_view(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the model's head (and so every exit) reads from a layer's output."""
        return hidden


class AlbertFamily(EncoderFamily):
    """ALBERT: embeddings projected to the hidden size; layer m applies the layer group that
    owns it (one group shared by all layers in the released models)."""

    model_types = ("albert",)

    def take_pooler(self) -> nn.Linear | None:
        pooler = self.encoder.pooler  # a bare Linear; `pooler_activation` (tanh) has no weights
        self.encoder.pooler = None
        return pooler

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        hidden = self.encoder.embeddings(input_ids, token_type_ids=token_type_ids)
        return self.encoder.encoder.embedding_hidden_mapping_in(hidden)

    def layer(self, index: int, hidden: torch.Tensor, inputs: LayerInputs) -> torch.Tensor:
        config = self.encoder.config
        group = int(index / (config.num_hidden_layers / config.num_hidden_groups))
        return self.encoder.encoder.albert_layer_groups[group](hidden, inputs.per_sample["mask"])

    def layer_costs(self) -> list[LayerCost]:
        """A layer runs its group's `inner_group_num` BERT layers."""
        cost, inner = self.plain_layer_cost(), self.encoder.config.inner_group_num
        return [LayerCost(inner * cost.per_token, inner * cost.per_pair)] * self.encoder.config.num_hidden_layers


class DistilBertFamily(EncoderFamily):
    """DistilBERT: no token types, no pooler, layers in `.transformer.layer`."""

    model_types = ("distilbert",)

    def intermediate_size(self) -> int:
        return self.encoder.config.hidden_dim

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        return self.encoder.embeddings(input_ids)

    def layer(self, index: int, hidden: torch.Tensor, inputs: LayerInputs) -> torch.Tensor:
        return self.encoder.transformer.layer[index](hidden, inputs.per_sample["mask"])


class DebertaV2Family(EncoderFamily):
    """DeBERTa-v2/v3: embeddings zero the padded positions; every layer takes the pairwise
    padding mask, the relative positions and the (normalised) relative position embeddings;
    an optional convolution follows the first layer."""

    model_types = ("deberta-v2",)

    def __init__(self, encoder: PreTrainedModel) -> None:
        super().__init__(encoder)
        if getattr(encoder, "z_steps", 0) > 1:
            raise De3Error("DeBERTa with z_steps > 1 (enhanced mask decoder passes) is not supported")

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        return self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, mask=attention_mask)

    def layer_inputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> LayerInputs:
        encoder = self.encoder.encoder
        per_sample = {"mask": encoder.get_attention_mask(attention_mask)}
        if encoder.conv is not None:
            per_sample |= {"padding": attention_mask, "embeddings": hidden}
        shared = {"relative_pos": encoder.get_rel_pos(hidden), "rel_embeddings": encoder.get_rel_embedding()}
        return LayerInputs(per_sample, shared)

    def layer(self, index: int, hidden: torch.Tensor, inputs: LayerInputs) -> torch.Tensor:
        encoder = self.encoder.encoder
        output, _ = encoder.layer[index](hidden, inputs.per_sample["mask"], **inputs.shared)
        if index == 0 and encoder.conv is not None:
            output = encoder.conv(inputs.per_sample["embeddings"], output, inputs.per_sample["padding"])
        return output

    def layer_costs(self) -> list[LayerCost]:
        """BERT's layer plus the disentangled attention: every layer projects the 2k relative
        embeddings (k = `position_buckets`, or `max_relative_positions` without buckets) with its
        query and key projections (2k·h² each, once per layer; with `share_att_key` both
        always, else one per kind) and scores every token against all 2k of them for each of
        c2p and p2c (2k·h per token each); the convolution after the first layer (h²·kernel /
        groups per token)."""
        encoder, h = self.encoder.encoder, self.encoder.config.hidden_size
        cost = self.plain_layer_cost()
        attention = encoder.layer[0].attention.self
        if attention.relative_attention:
            span, kinds = 2 * attention.pos_ebd_size, len(attention.pos_att_type)
            projections = 2 if attention.share_att_key else kinds
            cost = LayerCost(cost.per_token + kinds * span * h, cost.per_pair, fixed=projections * span * h * h)
        costs = [cost] * len(encoder.layer)
        if encoder.conv is not None:
            costs[0] = replace(cost, per_token=cost.per_token + encoder.conv.conv.weight.numel())
        return costs


class MPNetFamily(EncoderFamily):
    """MPNet: no token types; every layer adds the same relative position bias."""

    model_types = ("mpnet",)

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        return self.encoder.embeddings(input_ids=input_ids)

    def layer_inputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> LayerInputs:
        return LayerInputs(
            {
                "mask": self.padding_mask(hidden, attention_mask),
                "position_bias": self.encoder.encoder.compute_position_bias(hidden),
            }
        )

    def layer(self, index: int, hidden: torch.Tensor, inputs: LayerInputs) -> torch.Tensor:
        per_sample = inputs.per_sample
        return self.encoder.encoder.layer[index](hidden, per_sample["mask"], per_sample["position_bias"])[0]


class ModernBertFamily(EncoderFamily):
    """ModernBERT (padded path): rotary position embeddings, layers alternating global and
    sliding-window attention, each with its own mask and rotary table; a final norm that the
    model's head reads, so every exit reads it too."""

    model_types = ("modernbert",)

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        return self.encoder.embeddings(input_ids=input_ids)

    def layer_inputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> LayerInputs:
        config = self.encoder.config
        masks = {"config": config, "inputs_embeds": hidden, "attention_mask": attention_mask}
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        return LayerInputs(
            {
                "full_attention": create_bidirectional_mask(**masks),
                "sliding_attention": create_bidirectional_sliding_window_mask(**masks),
            },
            {kind: self.encoder.rotary_emb(hidden, position_ids, kind) for kind in set(config.layer_types)},
        )

    def layer(self, index: int, hidden: torch.Tensor, inputs: LayerInputs) -> torch.Tensor:
        layer = self.encoder.layers[index]
        kind = layer.attention_type
        return layer(hidden, attention_mask=inputs.per_sample[kind], position_embeddings=inputs.shared[kind])

    def exit_view(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.encoder.final_norm(hidden)

    def layer_costs(self) -> list[LayerCost]:
        """Query-key-value and output projections (4h² per token); the gated feed-forward, Wi to
        2i (input and gate) and Wo back (3hi, 1.5× a plain one); a sliding-window layer's query
        attends to the keys at most `local_attention` / 2 positions away (as a windowed kernel
        computes them; the padded path's SDPA also computes the masked-out scores)."""
        config = self.encoder.config
        h, i = config.hidden_size, config.intermediate_size
        window = {"full_attention": None, "sliding_attention": config.sliding_window}
        return [LayerCost(4 * h * h + 3 * h * i, 2 * h, window[kind]) for kind in config.layer_types]


FAMILIES: dict[str, type[EncoderFamily]] = {
    model_type: family
    for family in (EncoderFamily, AlbertFamily, DistilBertFamily, DebertaV2Family, MPNetFamily, ModernBertFamily)
    for model_type in family.model_types
}


def require_supported(model_type: str | None, what: str) -> None:
    """One clear error, naming `what` and the supported families, unless `model_type` has an adapter."""
    if model_type not in FAMILIES:
        raise De3Error(
            f"{what} (model_type {model_type!r}) is not a supported encoder family; "
            f"de3 supports model_type {', '.join(sorted(FAMILIES))}"
        )


def family_for(encoder: nn.Module) -> EncoderFamily:
    """The adapter for `encoder`'s `config.model_type`; one clear error for any other model."""
    model_type = getattr(getattr(encoder, "config", None), "model_type", None)
    require_supported(model_type, type(encoder).__name__)
    return FAMILIES[model_type](encoder)
