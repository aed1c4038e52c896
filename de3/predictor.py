"""Real early-exit inference: the backbone runs one layer at a time and each sample leaves the
batch at the first layer where the exit rule lets it go, so later layers run only on the
samples still undecided. The rules are the same functions the sweep simulates."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from de3.data.sampling import LengthSortedSampler
from de3.data.tasks import TaskSpec
from de3.errors import De3Error
from de3.metrics import predictions
from de3.models.exit_rules import ExitRule, get_rule, layer_indicator, validate_params, validate_threshold
from de3.models.module import MultiExitModule
from de3.models.multi_exit import MultiExitModel
from de3.thresholds import ExitSetting, resolve_exit_setting

log = logging.getLogger(__name__)


@dataclass
class ExitPrediction:
    """Per sample: `exit_layer` [N] (1-based), `logits` [N, C] of the exit that answered,
    `prediction` [N] (class id, or the value for regression), `probability` [N] of that class
    (None for regression)."""

    exit_layer: torch.Tensor
    logits: torch.Tensor
    prediction: torch.Tensor
    probability: torch.Tensor | None


class EarlyExitPredictor:
    """Early-exit inference with one rule and threshold on a trained multi-exit model.

    `predict(texts)` takes strings (or pairs of strings for pair tasks) and returns an
    `ExitPrediction`; `predict_batch` does the same for a tokenized batch. Build it with
    `from_run` to deploy a trained run: its checkpoint, with each threshold's own parameters.
    """

    def __init__(
        self,
        model: MultiExitModel,
        tokenizer: PreTrainedTokenizerBase,
        task: TaskSpec,
        rule: str,
        threshold: float,
        params: Mapping[str, Any] | None = None,
        max_seq_length: int = 128,
        batch_size: int = 32,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.task = task
        self.rule: ExitRule = get_rule(rule)
        if not self.rule.supports(task.is_regression, model.prototypes is not None):
            kind = "regression" if task.is_regression else "classification"
            without = ", no prototypes" if model.prototypes is None else ""
            raise De3Error(f"exit rule {rule!r} does not apply to this model ({kind} task{without})")
        self.threshold = validate_threshold(self.rule, threshold)
        self.params = validate_params(self.rule, params)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.collate = DataCollatorWithPadding(tokenizer)

    @classmethod
    def from_setting(cls, setting: ExitSetting, **kwargs: Any) -> EarlyExitPredictor:
        """Load the setting's checkpoint; inputs are truncated as in the sweep unless
        `max_seq_length` is given."""
        module = MultiExitModule.from_checkpoint(setting.checkpoint)
        if setting.max_seq_length is not None:
            kwargs.setdefault("max_seq_length", setting.max_seq_length)
        return cls(
            module.model, module.tokenizer, module.task, setting.rule, setting.threshold, setting.params, **kwargs
        )

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        rule: str,
        target_speedup: float | None = None,
        threshold: float | None = None,
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> EarlyExitPredictor:
        """Deploy a training run (its output folder): the checkpoint its `thresholds.json` was
        computed on, the threshold that reached `target_speedup` there (or `threshold`), and the
        rule's recorded parameters, each overridden by the one given in `params`."""
        setting = resolve_exit_setting(
            rule, run_dir=run_dir, threshold=threshold, target_speedup=target_speedup, params=params
        )
        return cls.from_setting(setting, **kwargs)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        rule: str,
        threshold: float | None = None,
        target_speedup: float | None = None,
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> EarlyExitPredictor:
        """Load a checkpoint; the threshold is given, or read for `target_speedup` from the
        `thresholds.json` of its run folder, which must have been computed on this very file."""
        setting = resolve_exit_setting(
            rule, checkpoint=path, threshold=threshold, target_speedup=target_speedup, params=params
        )
        return cls.from_setting(setting, **kwargs)

    @torch.inference_mode()
    def predict_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> ExitPrediction:
        backbone, prototypes = self.model.backbone, self.model.prototypes
        num_layers, batch = self.model.num_layers, input_ids.shape[0]
        hidden = backbone.embed(input_ids, attention_mask, token_type_ids)
        layer_inputs = backbone.layer_inputs(hidden, attention_mask)
        active = torch.arange(batch)  # original positions of the samples still running
        history: list[torch.Tensor] = []  # per layer run: logits [n_active, C]
        distances: list[torch.Tensor] = []
        exit_layer = torch.full((batch,), num_layers, dtype=torch.long)
        answer_logits: torch.Tensor | None = None
        for m in range(num_layers):
            hidden = backbone.layer(m, hidden, layer_inputs)
            logits, pooled = self.model.exit_logits(m, backbone.exit_view(hidden), attention_mask)
            if answer_logits is None:
                answer_logits = logits.new_zeros(batch, logits.shape[-1])
            if m == num_layers - 1:
                answer_logits[active] = logits
                break
            history.append(logits)
            if self.rule.needs_distances:
                distances.append(prototypes.layer_distances(m, prototypes.map_layer(m, pooled)))
            indicator = layer_indicator(
                self.rule, torch.stack(history), torch.stack(distances) if distances else None, self.params
            )
            leaving = self.rule.exits(indicator, self.threshold)
            if leaving.any():
                exit_layer[active[leaving]] = m + 1
                answer_logits[active[leaving]] = logits[leaving]
                staying = ~leaving
                active, hidden, attention_mask = active[staying], hidden[staying], attention_mask[staying]
                layer_inputs = layer_inputs.select(staying)
                history = [h[staying] for h in history]
                distances = [d[staying] for d in distances]
                if len(active) == 0:
                    break
        regression = self.task.is_regression
        probability = None if regression else torch.softmax(answer_logits.float(), -1).max(-1).values
        return ExitPrediction(exit_layer, answer_logits, predictions(answer_logits, regression), probability)

    def tokenize(self, texts: Sequence[str | Sequence[str]]) -> list[dict[str, Any]]:
        """Strings (or pairs) → features truncated to `max_seq_length`; empty texts are refused."""
        pairs = [(t,) if isinstance(t, str) else tuple(t) for t in texts]
        expected = len(self.task.local.text_columns)
        for index, pair in enumerate(pairs):
            if len(pair) != expected:
                raise De3Error(f"input {index}: task {self.task.name!r} takes {expected} text(s), got {len(pair)}")
            if not all(text.strip() for text in pair):
                raise De3Error(f"input {index}: empty text")
        columns = [list(c) for c in zip(*pairs)]
        encoded = self.tokenizer(*columns, truncation=True, max_length=self.max_seq_length)
        # Only inputs that fill max_seq_length can have been cut: measure those alone untruncated.
        at_limit = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) == self.max_seq_length]
        if at_limit:
            full = self.tokenizer(*([column[i] for i in at_limit] for column in columns))["input_ids"]
            too_long = sum(len(ids) > self.max_seq_length for ids in full)
            if too_long:
                log.warning(
                    "%d of %d inputs are longer than max_seq_length=%d tokens and were truncated",
                    too_long,
                    len(pairs),
                    self.max_seq_length,
                )
        return [{key: encoded[key][i] for key in encoded} for i in range(len(pairs))]

    def predict(self, texts: Sequence[str | Sequence[str]]) -> ExitPrediction:
        """Early-exit predictions for raw texts (in their order), in batches of `batch_size`
        formed longest first, as the evaluation loader forms them: little padding, and on a
        split the very batches the sweep's exit cache came from, so its thresholds mean the
        same here to the last bit."""
        features = self.tokenize(texts)
        order = LengthSortedSampler([len(f["input_ids"]) for f in features]).order
        parts = []
        for start in range(0, len(features), self.batch_size):
            batch = self.collate([features[i] for i in order[start : start + self.batch_size]])
            parts.append(self.predict_batch(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")))
        restore = torch.tensor(order).argsort()
        probability = None if parts[0].probability is None else torch.cat([p.probability for p in parts])[restore]
        return ExitPrediction(
            torch.cat([p.exit_layer for p in parts])[restore],
            torch.cat([p.logits for p in parts])[restore],
            torch.cat([p.prediction for p in parts])[restore],
            probability,
        )
