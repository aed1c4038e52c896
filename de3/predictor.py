"""Real early-exit inference: the backbone runs one layer at a time and each sample leaves the
batch at the first layer where the exit rule lets it go, so later layers run only on the
samples still undecided. The rules take the same steps the sweep simulates.

`EarlyExitPredictor.start` and `advance` expose the layer loop itself (serving advances several
batches in turn and answers each sample as soon as it leaves); `predict_batch` runs it to the end.
"""

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
from de3.devices import resolve_device, resolve_precision
from de3.errors import De3Error
from de3.metrics import predictions
from de3.models.encoder_families import LayerInputs
from de3.models.exit_rules import ExitRule, RuleState, get_rule, validate_params, validate_threshold
from de3.models.module import MultiExitModule
from de3.models.multi_exit import MultiExitModel
from de3.text_input import check_text, max_chars_for
from de3.thresholds import ExitSetting, resolve_exit_setting, threshold_out_of_range

log = logging.getLogger(__name__)


def _ends_early(texts: Sequence[str], offsets: Sequence[tuple[int, int]], sequence_ids: Sequence[int | None]) -> bool:
    """Whether the tokens kept of an input (their character `offsets` and which of its `texts`
    each came from) stop before the end of one of its texts: it was truncated."""
    ends = [0] * len(texts)
    for (_, end), text_index in zip(offsets, sequence_ids):
        if text_index is not None:
            ends[text_index] = max(ends[text_index], end)
    return any(end < len(text.rstrip()) for end, text in zip(ends, texts))


@dataclass
class ExitPrediction:
    """Per sample: `exit_layer` [N] (1-based), `logits` [N, C] of the exit that answered,
    `prediction` [N] (class id, or the value for regression), `probability` [N] of that class
    (None for regression). On the CPU."""

    exit_layer: torch.Tensor
    logits: torch.Tensor
    prediction: torch.Tensor
    probability: torch.Tensor | None


@dataclass
class ExitedSamples:
    """The samples that left a `LayerwiseBatch` at one layer: their `positions` [k] in the batch
    given to `start`, the 1-based `exit_layer` they left at, and the answering exit's `logits`
    [k, C] (float32, on the model's device). `prediction` and `probability` are computed when read."""

    positions: torch.Tensor
    exit_layer: int
    logits: torch.Tensor
    is_regression: bool

    @property
    def prediction(self) -> torch.Tensor:
        """[k]: the class id, or the value for regression."""
        return predictions(self.logits, self.is_regression)

    @property
    def probability(self) -> torch.Tensor | None:
        """[k]: the probability of the predicted class (None for regression)."""
        return None if self.is_regression else torch.softmax(self.logits, -1).max(-1).values


@dataclass
class LayerwiseBatch:
    """A batch on its way through the layers: the samples still running (`positions` [n] in the
    batch given to `start`), their hidden states [n, T, H], padding mask [n, T], what the layers
    take besides (`layer_inputs`), the rule's running state, and the next layer to run (0-based)."""

    positions: torch.Tensor
    hidden: torch.Tensor
    attention_mask: torch.Tensor
    layer_inputs: LayerInputs
    state: RuleState
    layer: int = 0

    @property
    def finished(self) -> bool:
        """No sample is left running."""
        return self.positions.shape[0] == 0

    def finish(self) -> torch.Tensor:
        """Every sample leaves: their positions; the batch is finished (nothing else is kept)."""
        positions, self.positions = self.positions, self.positions[:0]
        return positions

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the samples at `rows` (indices into the running samples)."""
        self.positions, self.hidden = self.positions[rows], self.hidden[rows]
        self.attention_mask, self.layer_inputs = self.attention_mask[rows], self.layer_inputs.select(rows)
        self.state = tuple(part[rows] for part in self.state)


class EarlyExitPredictor:
    """Early-exit inference with one rule and threshold on a trained multi-exit model.

    `predict(texts)` takes strings (or pairs of strings for pair tasks) and returns an
    `ExitPrediction`; `predict_batch` does the same for a tokenized batch. Build it with
    `from_run` to deploy a trained run: its checkpoint, with each threshold's own parameters.
    The model is moved to `device` (`auto`: CUDA when present) and cast to `precision` (fp32,
    bf16, fp16); a threshold keeps its speed-up only in the precision its sweep ran in.
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
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.device = resolve_device(device)
        self.precision = precision
        self.model = model.to(device=self.device, dtype=resolve_precision(precision)).eval()
        self.tokenizer = tokenizer
        self.task = task
        self.rule: ExitRule = get_rule(rule)
        if not self.rule.supports(task.is_regression, model.prototypes is not None):
            kind = "regression" if task.is_regression else "classification"
            without = ", no prototypes" if model.prototypes is None else ""
            raise De3Error(f"exit rule {rule!r} does not apply to this model ({kind} task{without})")
        self.threshold = validate_threshold(self.rule, threshold)
        out_of_range = threshold_out_of_range(self.rule, self.threshold)
        if out_of_range is not None:
            raise De3Error(f"exit.threshold={self.threshold:g}: {out_of_range}")
        self.params = validate_params(self.rule, params)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.collate = DataCollatorWithPadding(tokenizer)

    @classmethod
    def from_setting(cls, setting: ExitSetting, **kwargs: Any) -> EarlyExitPredictor:
        """Load the setting's checkpoint; inputs are truncated, and the model runs in the
        precision, as in the sweep unless `max_seq_length` or `precision` is given."""
        module = MultiExitModule.from_checkpoint(setting.checkpoint)
        if setting.max_seq_length is not None:
            kwargs.setdefault("max_seq_length", setting.max_seq_length)
        kwargs.setdefault("precision", setting.precision)
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
        where = {"run_dir": run_dir}
        return cls._from_resolved(rule, where, threshold, target_speedup, params, kwargs)

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
        where = {"checkpoint": path}
        return cls._from_resolved(rule, where, threshold, target_speedup, params, kwargs)

    @classmethod
    def _from_resolved(
        cls,
        rule: str,
        where: dict[str, str | Path],
        threshold: float | None,
        target_speedup: float | None,
        params: Mapping[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> EarlyExitPredictor:
        """`from_setting` on the setting `resolve_exit_setting` finds `where` (a run folder or a
        checkpoint), in the precision asked for in `kwargs` if any."""
        setting = resolve_exit_setting(
            rule,
            **where,
            threshold=threshold,
            target_speedup=target_speedup,
            params=params,
            precision=kwargs.get("precision"),
        )
        return cls.from_setting(setting, **kwargs)

    @torch.inference_mode()
    def start(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> LayerwiseBatch:
        """A tokenized batch [B, T], embedded on the model's device, ready for `advance`."""
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        if token_type_ids is not None:
            token_type_ids = token_type_ids.to(self.device)
        backbone = self.model.backbone
        hidden = backbone.embed(input_ids, attention_mask, token_type_ids)
        positions = torch.arange(input_ids.shape[0], device=self.device)
        return LayerwiseBatch(positions, hidden, attention_mask, backbone.layer_inputs(hidden, attention_mask), ())

    @torch.inference_mode()
    def advance(self, batch: LayerwiseBatch) -> ExitedSamples:
        """Run the next layer on the samples still running in `batch` and take the rule's step;
        return the samples that leave here (all of them at the last layer) and drop them from
        `batch`. One host synchronisation (how many leave); no gathers when nobody does."""
        model, m = self.model, batch.layer
        hidden = model.backbone.layer(m, batch.hidden, batch.layer_inputs)
        logits, pooled = model.exit_logits(m, model.backbone.exit_view(hidden), batch.attention_mask)
        logits = logits.float()
        batch.layer += 1
        if batch.layer == model.num_layers:
            return self._exited(batch.finish(), batch.layer, logits)
        distances = None
        if self.rule.needs_distances:
            distances = model.prototypes.layer_distances(m, model.prototypes.map_layer(m, pooled))
        indicator, state = self.rule.step(logits, distances, batch.state, **self.params)
        leaving = self.rule.exits(indicator, self.threshold)
        num_leaving = int(leaving.sum())  # the one host synchronisation of this layer
        batch.hidden, batch.state = hidden, state
        if num_leaving == 0:
            return self._exited(batch.positions[:0], batch.layer, logits[:0])
        if num_leaving == leaving.shape[0]:
            return self._exited(batch.finish(), batch.layer, logits)
        order = torch.argsort(leaving.to(torch.uint8), stable=True)  # staying first, then leaving
        staying, left = order[: leaving.shape[0] - num_leaving], order[leaving.shape[0] - num_leaving :]
        exited = self._exited(batch.positions[left], batch.layer, logits[left])
        batch.keep(staying)
        return exited

    def _exited(self, positions: torch.Tensor, exit_layer: int, logits: torch.Tensor) -> ExitedSamples:
        return ExitedSamples(positions, exit_layer, logits, self.task.is_regression)

    @torch.inference_mode()
    def predict_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> ExitPrediction:
        """Every sample of a tokenized batch [B, T] through the layers until it exits."""
        batch = self.start(input_ids, attention_mask, token_type_ids)
        parts = []  # the samples that left, layer by layer
        while not batch.finished:
            exited = self.advance(batch)
            if exited.positions.shape[0]:
                parts.append(exited)
        layers = [torch.full_like(part.positions, part.exit_layer) for part in parts]
        if len(parts) == 1:  # all left together, still in their order (batch 1 always)
            exit_layer, answer_logits = layers[0], parts[0].logits
        else:
            order = torch.cat([part.positions for part in parts]).argsort()
            exit_layer, answer_logits = torch.cat(layers)[order], torch.cat([part.logits for part in parts])[order]
        answer_logits = answer_logits.cpu()
        regression = self.task.is_regression
        probability = None if regression else torch.softmax(answer_logits, -1).max(-1).values
        return ExitPrediction(exit_layer.cpu(), answer_logits, predictions(answer_logits, regression), probability)

    def tokenize(self, texts: Sequence[str | Sequence[str]]) -> list[dict[str, Any]]:
        """Strings (or pairs) → features truncated to `max_seq_length`, in one tokenizer pass over
        texts first cut to `max_chars_for(max_seq_length)` characters; texts that are not valid
        Unicode or have nothing visible in them are refused (`de3.text_input.check_text`)."""
        pairs = [(t,) if isinstance(t, str) else tuple(t) for t in texts]
        expected, max_chars = len(self.task.local.text_columns), max_chars_for(self.max_seq_length)
        for index, pair in enumerate(pairs):
            if len(pair) != expected:
                raise De3Error(f"input {index}: task {self.task.name!r} takes {expected} text(s), got {len(pair)}")
            try:
                pairs[index] = tuple(check_text(text, max_chars) for text in pair)
            except ValueError as err:
                raise De3Error(f"input {index}: {err}") from None
        columns = [list(c) for c in zip(*pairs)]
        fast = self.tokenizer.is_fast
        encoded = self.tokenizer(*columns, truncation=True, max_length=self.max_seq_length, return_offsets_mapping=fast)
        offsets = encoded.pop("offset_mapping", None)
        # Only inputs that fill max_seq_length can have been cut: those whose last token kept ends
        # before the end of their text (a tokenizer without offsets: all of them, "may have been").
        at_limit = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) == self.max_seq_length]
        cut = [i for i in at_limit if offsets is None or _ends_early(pairs[i], offsets[i], encoded.sequence_ids(i))]
        if cut:
            log.warning(
                "%d of %d inputs are longer than max_seq_length=%d tokens and were truncated%s",
                len(cut),
                len(pairs),
                self.max_seq_length,
                "" if fast else " (or fill it exactly: this tokenizer gives no offsets to tell)",
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
