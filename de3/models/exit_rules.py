"""Exit rules as pure tensor functions, shared by the threshold sweep (over a cache of N
samples) and by real layer-by-layer early-exit inference.

A rule is a *step*: from one internal layer's logits [n, C] (and, for DR/EDR, its prototype
distances [n, C]) and the rule's running state, the indicator of that layer [n] and the new
state. The state is a tuple of per-sample tensors (sample dimension first; empty before the
first layer), so the samples that leave are dropped from it by indexing. Real early exit takes
one step per layer on the samples still running; the sweep takes the same steps over every
layer of its cache (`rule_indicator`). A sample exits at the first internal layer whose indicator
passes the threshold (`ExitRule.exits`); the last layer always answers.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_type_hints

import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from de3.devices import PRECISIONS
from de3.errors import De3Error
from de3.metrics import predictions
from de3.models.indicators import distance_ratio, edr, normalized_entropy

RuleState = tuple[torch.Tensor, ...]
# step(logits [n, C], distances [n, C] | None, state, **params) -> (indicator [n], new state)
RuleStep = Callable[..., tuple[torch.Tensor, RuleState]]
# The types of the rules' parameters: what `validate_params` checks before any model runs.
Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def entropy_step(
    logits: torch.Tensor, distances: torch.Tensor | None, state: RuleState
) -> tuple[torch.Tensor, RuleState]:
    """DeeBERT: the entropy of the exit's distribution divided by log C, in [0, 1].

    DeeBERT's threshold S is an entropy in nats (its scripts sweep S ∈ [0, 0.7]); the same
    exits here take the threshold τ = S / ln C (S = 0.4 on a 2-class task: τ = 0.577)."""
    return normalized_entropy(logits), state


def max_probability_step(
    logits: torch.Tensor, distances: torch.Tensor | None, state: RuleState
) -> tuple[torch.Tensor, RuleState]:
    """1 − the largest class probability."""
    return 1.0 - torch.softmax(logits.float(), -1).max(-1).values, state


def dr_step(logits: torch.Tensor, distances: torch.Tensor, state: RuleState) -> tuple[torch.Tensor, RuleState]:
    """DE³'s distance ratio to the predicted class's prototype versus the nearest other (1 where
    the prototypes cannot tell: a class never seen in training has none)."""
    return distance_ratio(distances, logits.argmax(-1)), state


def edr_step(
    logits: torch.Tensor, distances: torch.Tensor, state: RuleState, lam: NonNegative = 1.0
) -> tuple[torch.Tensor, RuleState]:
    """DE³-BERT: weighted harmonic mean of entropy and DR (never below the entropy where DR
    is 1 because a class has no prototype)."""
    return edr(normalized_entropy(logits), distance_ratio(distances, logits.argmax(-1)), lam), state


def pcee_step(
    logits: torch.Tensor, distances: torch.Tensor | None, state: RuleState, patience: Count = 2
) -> tuple[torch.Tensor, RuleState]:
    """PCEE-BERT: the largest entropy over the last `patience` layers (all must be below τ; ∞
    until `patience` layers have run). State: the last `patience` − 1 entropies [n, k]."""
    entropy = normalized_entropy(logits).unsqueeze(1)  # [n, 1]
    recent = torch.cat([state[0], entropy], 1) if state else entropy  # [n, k ≤ patience]
    if recent.shape[1] < patience:
        return torch.full_like(entropy[:, 0], float("inf")), (recent,)
    return recent.max(1).values, (recent[:, 1:],)


def patience_step(
    logits: torch.Tensor, distances: torch.Tensor | None, state: RuleState, delta: Positive = 0.1
) -> tuple[torch.Tensor, RuleState]:
    """PABEE: how many consecutive earlier layers agree with this one — the same argmax, or for
    regression (one output) a change smaller than `delta`. State: (previous answer, count)."""
    regression = logits.shape[-1] == 1
    answer = logits[:, 0].float() if regression else logits.argmax(-1)
    if not state:
        count = torch.zeros(answer.shape, dtype=torch.float32, device=answer.device)
        return count, (answer, count)
    previous, count = state
    agree = (answer - previous).abs() < delta if regression else answer == previous
    count = torch.where(agree, count + 1, 0.0)
    return count, (answer, count)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum(-1)


def dge_step(
    logits: torch.Tensor,
    distances: torch.Tensor | None,
    state: RuleState,
    divergence: Literal["kl", "js"] = "js",
    window: Count = 1,
) -> tuple[torch.Tensor, RuleState]:
    """BADGE's DGE: divergence between this exit's distribution and the mean of the previous
    `window` exits' distributions (KL(p‖r) or JS); ∞ at the first layer.

    The mean is a difference of running sums, kept as a cumulative sum is (accumulated in
    float64, read in float32), so every threshold chosen before this rule took steps keeps its
    decisions bit for bit. State: the running sum [n, C] and its last `window` readings [n, k, C]."""
    probs = torch.softmax(logits.float(), -1).clamp(min=1e-12)  # [n, C]
    if not state:
        values = torch.full_like(probs[:, 0], float("inf"))
        return values, (probs.double(), torch.zeros_like(probs).unsqueeze(1))
    total, readings = state
    reading = total.float()  # the sum of every earlier layer's distribution
    reference = ((reading - readings[:, 0]) / readings.shape[1]).clamp(min=1e-12)
    if divergence == "kl":
        values = _kl(probs, reference)
    else:
        middle = 0.5 * (probs + reference)
        values = 0.5 * _kl(probs, middle) + 0.5 * _kl(reference, middle)
    return values, (total + probs, torch.cat([readings, reading.unsqueeze(1)], 1)[:, -window:])


@dataclass(frozen=True)
class ExitRule:
    """A named rule: its indicator, what it needs, and how a threshold is applied.

    `counts`: the indicator is a count and a sample exits when it reaches the threshold
    (patience); otherwise a sample exits when the indicator is below the threshold.
    """

    name: str
    step: RuleStep
    needs_distances: bool = False
    classification: bool = True
    regression: bool = False
    counts: bool = False

    def exits(self, indicator: torch.Tensor, threshold: float) -> torch.Tensor:
        """Bool, same shape as `indicator`: may this sample exit at this layer."""
        return indicator >= threshold if self.counts else indicator < threshold

    def supports(self, is_regression: bool, has_distances: bool) -> bool:
        task_ok = self.regression if is_regression else self.classification
        return task_ok and (has_distances or not self.needs_distances)


RULES: dict[str, ExitRule] = {
    rule.name: rule
    for rule in (
        ExitRule("entropy", entropy_step),
        ExitRule("maxprob", max_probability_step),
        ExitRule("patience", patience_step, regression=True, counts=True),
        ExitRule("pcee", pcee_step),
        ExitRule("dr", dr_step, needs_distances=True),
        ExitRule("edr", edr_step, needs_distances=True),
        ExitRule("dge", dge_step),
    )
}


def get_rule(name: str) -> ExitRule:
    """The rule called `name`, or a clear error listing the rules."""
    if name not in RULES:
        raise De3Error(f"unknown exit rule {name!r}; choose from {sorted(RULES)}")
    return RULES[name]


@functools.cache
def _params_model(step: RuleStep) -> type[BaseModel]:
    """The step's own parameters (those after logits, distances and state) as a pydantic model:
    their types and bounds are the annotations of its signature, their defaults its defaults."""
    hints = get_type_hints(step, include_extras=True)
    own = list(inspect.signature(step).parameters.values())[3:]
    fields: dict[str, Any] = {p.name: (hints[p.name], p.default) for p in own}
    return create_model(step.__name__, __config__=ConfigDict(extra="forbid"), **fields)


def _one_line(error: ValidationError, where: str, known: list[str]) -> str:
    messages = []
    for item in error.errors():
        key = ".".join(str(part) for part in (where, *item["loc"]))
        reason = item["msg"]
        if item["type"] == "extra_forbidden":
            reason = f"no such parameter (this rule takes {', '.join(known) or 'none'})"
        messages.append(f"{key}={item['input']!r}: {reason}")
    return "; ".join(messages)


def validate_params(rule: ExitRule, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The rule's parameters checked and completed with its defaults (counts are integers ≥ 1,
    λ ≥ 0, δ > 0, divergence kl or js), or a one-line De3Error naming `exit.params.<rule>.<key>`."""
    model = _params_model(rule.step)
    try:
        return model(**dict(params or {})).model_dump()
    except ValidationError as err:
        raise De3Error(_one_line(err, f"exit.params.{rule.name}", list(model.model_fields))) from None


_COUNT = TypeAdapter(Count)
_FINITE = TypeAdapter(Annotated[float, Field(allow_inf_nan=False)])
_SPEEDUP = TypeAdapter(Annotated[float, Field(ge=1, allow_inf_nan=False)])


def validate_threshold(rule: ExitRule, threshold: Any) -> float:
    """A threshold for `rule`: a count ≥ 1 for counting rules (patience 0 would mean "exit at
    once", the opposite of PABEE's "never"), else a finite number; or a one-line De3Error."""
    try:
        return float((_COUNT if rule.counts else _FINITE).validate_python(threshold))
    except ValidationError as err:
        raise De3Error(f"exit.threshold={threshold!r} for rule {rule.name}: {err.errors()[0]['msg']}") from None


def validate_exit_config(exit_config: Mapping[str, Any]) -> None:
    """Everything the `exit` config says, checked before any model is built: the rule, every
    rule's parameters (the sweep uses them all), the threshold, the target speed-up and the
    precision."""
    rule = get_rule(exit_config["rule"])
    precision = exit_config.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise De3Error(f"exit.precision={precision!r}: choose from {sorted(PRECISIONS)}")
    for name, params in (exit_config.get("params") or {}).items():
        validate_params(get_rule(name), params)
    if exit_config.get("threshold") is not None:
        validate_threshold(rule, exit_config["threshold"])
    target = exit_config.get("target_speedup")
    if target is not None:
        try:
            _SPEEDUP.validate_python(target)
        except ValidationError as err:
            raise De3Error(_one_line(err, "exit.target_speedup", [])) from None


def check_distances(rule: ExitRule, distances: torch.Tensor | None) -> None:
    """A one-line De3Error if `rule` needs prototype distances and there are none."""
    if rule.needs_distances and distances is None:
        raise De3Error(f"exit rule {rule.name!r} needs prototype distances: train with loss=de3")


def rule_indicator(
    rule: ExitRule, logits: torch.Tensor, distances: torch.Tensor | None, params: Mapping[str, Any]
) -> torch.Tensor:
    """The rule's indicator for the internal layers, by the steps real early exit takes: logits
    [L, N, C] (the last layer's row is ignored) and distances [L−1, N, C] → [L−1, N]. `params`
    are the rule's own parameters (λ, patience, window...)."""
    check_distances(rule, distances)
    params = validate_params(rule, params)
    state: RuleState = ()
    rows = []
    for m in range(logits.shape[0] - 1):
        row, state = rule.step(logits[m], distances[m] if rule.needs_distances else None, state, **params)
        rows.append(row)
    return torch.stack(rows)


def first_exit(exits: torch.Tensor) -> torch.Tensor:
    """[L−1, N] bool → each sample's exit layer, 0-based: the first True row, else L−1 (the last layer)."""
    num_internal = exits.shape[0]
    padded = torch.cat([exits, torch.ones_like(exits[:1])])
    return padded.to(torch.int8).argmax(0).clamp(max=num_internal).long()


def decide(
    rule: ExitRule,
    logits: torch.Tensor,
    indicator: torch.Tensor,
    threshold: float,
    is_regression: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each sample exits and what it answers: (exit layer [N], 1-based; prediction [N])."""
    layer = first_exit(rule.exits(indicator, threshold))
    answer = predictions(logits, is_regression)[layer, torch.arange(logits.shape[1])]
    return layer + 1, answer
