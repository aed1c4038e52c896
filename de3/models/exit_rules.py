"""Exit rules as pure tensor functions, shared by the threshold sweep (vectorised over a cache
of N samples) and by real layer-by-layer early-exit inference.

A rule maps the outputs of the layers seen so far — logits [M, N, C] and, for DR/EDR, prototype
distances [M, N, C] — to an indicator [M, N] whose row m depends only on rows ≤ m. A sample
exits at the first internal layer whose indicator passes the threshold (`ExitRule.exits`);
the last layer always answers.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_type_hints

import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from de3.errors import De3Error
from de3.metrics import predictions
from de3.models.indicators import distance_ratio, edr, normalized_entropy

Indicator = Callable[..., torch.Tensor]
# The types of the rules' parameters: what `validate_params` checks before any model runs.
Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _max_probability_gap(logits: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.softmax(logits.float(), -1).max(-1).values


def _window_max(values: torch.Tensor, window: int) -> torch.Tensor:
    """Row m: max of rows m−window+1..m; ∞ for rows with fewer than `window` predecessors-and-self."""
    stacked = torch.stack([values.roll(shift, 0) for shift in range(window)])
    result = stacked.max(0).values
    result[: window - 1] = float("inf")
    return result


def _agreement_run(agree: torch.Tensor) -> torch.Tensor:
    """[M, N] bool (row m: layer m agrees with layer m−1; row 0 ignored) → consecutive count."""
    counts = torch.zeros(agree.shape, dtype=torch.float32)
    for m in range(1, agree.shape[0]):
        counts[m] = torch.where(agree[m], counts[m - 1] + 1, 0.0)
    return counts


def entropy_indicator(logits: torch.Tensor, distances: torch.Tensor | None = None) -> torch.Tensor:
    """DeeBERT: the entropy of the exit's distribution divided by log C, in [0, 1].

    DeeBERT's threshold S is an entropy in nats (its scripts sweep S ∈ [0, 0.7]); the same
    exits here take the threshold τ = S / ln C (S = 0.4 on a 2-class task: τ = 0.577)."""
    return normalized_entropy(logits)


def max_probability_indicator(logits: torch.Tensor, distances: torch.Tensor | None = None) -> torch.Tensor:
    """1 − the largest class probability."""
    return _max_probability_gap(logits)


def dr_indicator(logits: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """DE³'s distance ratio to the predicted class's prototype versus the nearest other (1 where
    the prototypes cannot tell: a class never seen in training has none)."""
    return distance_ratio(distances, logits.argmax(-1))


def edr_indicator(logits: torch.Tensor, distances: torch.Tensor, lam: NonNegative = 1.0) -> torch.Tensor:
    """DE³-BERT: weighted harmonic mean of entropy and DR (never below the entropy where DR
    is 1 because a class has no prototype)."""
    return edr(normalized_entropy(logits), distance_ratio(distances, logits.argmax(-1)), lam)


def pcee_indicator(logits: torch.Tensor, distances: torch.Tensor | None = None, patience: Count = 2) -> torch.Tensor:
    """PCEE-BERT: the largest entropy over the last `patience` layers (all must be below τ)."""
    return _window_max(normalized_entropy(logits), patience)


def patience_count(logits: torch.Tensor, distances: torch.Tensor | None = None, delta: Positive = 0.1) -> torch.Tensor:
    """PABEE: how many consecutive earlier layers agree with this one — the same argmax, or for
    regression (one output) a change smaller than `delta`."""
    if logits.shape[-1] == 1:
        values = logits[..., 0].float()
        agree = torch.cat([torch.zeros_like(values[:1], dtype=torch.bool), (values[1:] - values[:-1]).abs() < delta])
    else:
        classes = logits.argmax(-1)
        agree = torch.cat([torch.zeros_like(classes[:1], dtype=torch.bool), classes[1:] == classes[:-1]])
    return _agreement_run(agree)


def dge_indicator(
    logits: torch.Tensor,
    distances: torch.Tensor | None = None,
    divergence: Literal["kl", "js"] = "js",
    window: Count = 1,
) -> torch.Tensor:
    """BADGE's DGE: divergence between this exit's distribution and the mean of the previous
    `window` exits' distributions (KL(p‖r) or JS); ∞ at the first layer."""
    probs = torch.softmax(logits.float(), -1).clamp(min=1e-12)
    cumulative = torch.cat([torch.zeros_like(probs[:1]), probs.cumsum(0)])  # [M+1, N, C]
    index = torch.arange(probs.shape[0])
    start = (index - window).clamp(min=0)
    count = (index - start).clamp(min=1).to(probs.dtype)
    reference = ((cumulative[index] - cumulative[start]) / count[:, None, None]).clamp(min=1e-12)

    def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (p * (p.log() - q.log())).sum(-1)

    if divergence == "kl":
        values = kl(probs, reference)
    else:
        middle = 0.5 * (probs + reference)
        values = 0.5 * kl(probs, middle) + 0.5 * kl(reference, middle)
    values[0] = float("inf")
    return values


@dataclass(frozen=True)
class ExitRule:
    """A named rule: its indicator, what it needs, and how a threshold is applied.

    `counts`: the indicator is a count and a sample exits when it reaches the threshold
    (patience); otherwise a sample exits when the indicator is below the threshold.
    """

    name: str
    indicator: Indicator
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
        ExitRule("entropy", entropy_indicator),
        ExitRule("maxprob", max_probability_indicator),
        ExitRule("patience", patience_count, regression=True, counts=True),
        ExitRule("pcee", pcee_indicator),
        ExitRule("dr", dr_indicator, needs_distances=True),
        ExitRule("edr", edr_indicator, needs_distances=True),
        ExitRule("dge", dge_indicator),
    )
}


def get_rule(name: str) -> ExitRule:
    """The rule called `name`, or a clear error listing the rules."""
    if name not in RULES:
        raise De3Error(f"unknown exit rule {name!r}; choose from {sorted(RULES)}")
    return RULES[name]


@functools.cache
def _params_model(indicator: Indicator) -> type[BaseModel]:
    """The indicator's own parameters (those after logits and distances) as a pydantic model:
    their types and bounds are the annotations of its signature, their defaults its defaults."""
    hints = get_type_hints(indicator, include_extras=True)
    own = list(inspect.signature(indicator).parameters.values())[2:]
    fields: dict[str, Any] = {p.name: (hints[p.name], p.default) for p in own}
    return create_model(indicator.__name__, __config__=ConfigDict(extra="forbid"), **fields)


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
    model = _params_model(rule.indicator)
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
    rule's parameters (the sweep uses them all), the threshold and the target speed-up."""
    rule = get_rule(exit_config["rule"])
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


def _indicator(
    rule: ExitRule, logits: torch.Tensor, distances: torch.Tensor | None, params: Mapping[str, Any]
) -> torch.Tensor:
    if rule.needs_distances and distances is None:
        raise De3Error(f"exit rule {rule.name!r} needs prototype distances: train with loss=de3")
    args = (logits, distances[: logits.shape[0]]) if rule.needs_distances else (logits,)
    return rule.indicator(*args, **validate_params(rule, params))


def rule_indicator(
    rule: ExitRule, logits: torch.Tensor, distances: torch.Tensor | None, params: Mapping[str, Any]
) -> torch.Tensor:
    """The rule's indicator for the internal layers: logits [L, N, C] (the last layer's row is
    ignored) → [L−1, N]. `params` are the rule's own parameters (λ, patience, window...)."""
    return _indicator(rule, logits[:-1], distances, params)


def layer_indicator(
    rule: ExitRule, logits_so_far: torch.Tensor, distances_so_far: torch.Tensor | None, params: Mapping[str, Any]
) -> torch.Tensor:
    """The indicator at the newest layer, from the layers run so far: logits [m+1, n, C] (and
    distances [m+1, n, C]) → [n]. Equal to row m of `rule_indicator` since rules are causal."""
    return _indicator(rule, logits_so_far, distances_so_far, params)[-1]


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
