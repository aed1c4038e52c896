"""Exit rules on hand-built tensors with known answers."""

import math

import pytest
import torch

from de3.errors import De3Error
from de3.models.exit_rules import RULES, decide, first_exit, get_rule, rule_indicator

CONFIDENT, UNSURE = [4.0, 0.0], [0.1, 0.0]


def logits(*layers):
    """layers of per-sample logit pairs → [L, N, 2]"""
    return torch.tensor(layers)


def run(name, x, threshold, distances=None, **params):
    rule = get_rule(name)
    indicator = rule_indicator(rule, x, distances, params)
    return decide(rule, x, indicator, threshold, is_regression=False)


def test_first_exit_defaults_to_last_layer():
    exits = torch.tensor([[False, True, False], [True, True, False]])  # [L−1=2, N=3]
    assert first_exit(exits).tolist() == [1, 0, 2]


def test_entropy_everyone_at_layer_one_nobody_early_and_mixed():
    x = logits([CONFIDENT, UNSURE], [UNSURE, CONFIDENT], [[0.0, 3.0], [0.0, 3.0]])
    layers, answers = run("entropy", x, threshold=1.01)  # every entropy is below 1.01
    assert layers.tolist() == [1, 1] and answers.tolist() == [0, 0]
    layers, answers = run("entropy", x, threshold=0.0)  # nothing is below 0: the last layer answers
    assert layers.tolist() == [3, 3] and answers.tolist() == [1, 1]
    layers, answers = run("entropy", x, threshold=0.5)
    assert layers.tolist() == [1, 2] and answers.tolist() == [0, 0]


def test_threshold_tie_does_not_exit():
    x = logits([[0.0, 0.0]], [[1.0, 0.0]])  # layer 1 entropy is exactly 1
    assert run("entropy", x, threshold=1.0)[0].tolist() == [2]
    assert run("maxprob", x, threshold=0.5)[0].tolist() == [2]  # 1 − max p = 0.5, not < 0.5


def test_maxprob():
    x = logits([[2.0, 0.0]], [[0.0, 1.0]])
    gap = 1 - 1 / (1 + math.exp(-2))
    assert run("maxprob", x, threshold=gap + 1e-6)[0].tolist() == [1]
    assert run("maxprob", x, threshold=gap - 1e-6)[0].tolist() == [2]


def test_patience_counts_unchanged_predictions():
    a, b = [1.0, 0.0], [0.0, 1.0]
    # sample 0: a a a a → agreement at layers 2,3 ; sample 1: a b b a → agreement at layer 3 only
    x = logits([a, a], [a, b], [a, b], [a, a])
    assert run("patience", x, threshold=1)[0].tolist() == [2, 3]
    assert run("patience", x, threshold=2)[0].tolist() == [3, 4]
    assert run("patience", x, threshold=3)[0].tolist() == [4, 4]


def test_regression_patience_uses_delta():
    x = torch.tensor([[[1.0]], [[1.05]], [[1.5]], [[1.52]], [[9.0]]])  # [L=5, N=1, 1]
    rule = get_rule("patience")
    indicator = rule_indicator(rule, x, None, {"delta": 0.1})
    assert indicator[:, 0].tolist() == [0, 1, 0, 1]
    layers, answers = decide(rule, x, indicator, 1, is_regression=True)
    assert layers.tolist() == [2] and answers.tolist() == pytest.approx([1.05])


def test_pcee_needs_consecutive_confident_layers():
    x = logits([CONFIDENT], [UNSURE], [CONFIDENT], [CONFIDENT], [UNSURE])
    assert run("pcee", x, threshold=0.5, patience=2)[0].tolist() == [4]
    assert run("pcee", x, threshold=0.5, patience=1)[0].tolist() == [1]


def test_dr_and_edr_use_prototype_distances():
    x = logits([CONFIDENT, CONFIDENT], [CONFIDENT, CONFIDENT], [CONFIDENT, CONFIDENT])
    distances = torch.tensor([[[1.0, 9.0], [5.0, 5.0]], [[1.0, 9.0], [9.0, 1.0]]])  # [L−1, N, C]
    # sample 0: DR = 0.5·(1 − 8/9) at both layers; sample 1: DR 0.5, then 0.5·(1 + 8/9)
    assert run("dr", x, threshold=0.1, distances=distances)[0].tolist() == [1, 3]
    assert run("edr", x, threshold=0.1, distances=distances, lam=1.0)[0].tolist() == [1, 3]
    with pytest.raises(De3Error, match="needs prototype distances"):
        run("edr", x, threshold=0.1)


def test_dge_compares_with_previous_exits():
    a, b = [3.0, 0.0], [0.0, 3.0]
    x = logits([a], [a], [b], [b], [b])
    for divergence in ("kl", "js"):
        layers, _ = run("dge", x, threshold=1e-6, divergence=divergence, window=1)
        assert layers.tolist() == [2]  # layer 2 equals layer 1; layer 1 itself can never exit
    # with a window of 2, layer 4 is compared to the mean of layers 2 and 3 (a and b): no exit
    assert run("dge", logits([a], [a], [b], [b], [b], [b]), threshold=1e-6, window=2)[0].tolist() == [2]
    assert run("dge", logits([b], [a], [b], [b], [b], [b]), threshold=1e-6, window=2)[0].tolist() == [5]


def test_rules_are_causal():
    """Row m of an indicator must not change when later layers change (real early exit relies on it)."""
    torch.manual_seed(0)
    x, d = torch.randn(6, 5, 3), torch.rand(5, 5, 3)
    y, e = x.clone(), d.clone()
    y[4:], e[3:] = torch.randn(2, 5, 3), torch.rand(2, 5, 3)
    params = {"edr": {"lam": 2.0}, "pcee": {"patience": 2}, "dge": {"window": 2}}
    for rule in RULES.values():
        full = rule_indicator(rule, x, d, params.get(rule.name, {}))
        changed = rule_indicator(rule, y, e, params.get(rule.name, {}))
        torch.testing.assert_close(full[:3], changed[:3])


def test_unknown_rule_and_bad_params():
    with pytest.raises(De3Error, match="unknown exit rule 'coinflip'"):
        get_rule("coinflip")
    with pytest.raises(De3Error, match="bad parameters"):
        rule_indicator(get_rule("pcee"), torch.zeros(3, 1, 2), None, {"window": 3})
