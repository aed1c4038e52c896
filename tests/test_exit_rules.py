"""Exit rules on hand-built tensors with known answers."""

import math

import pytest
import torch

from de3.errors import De3Error
from de3.models.exit_rules import (
    RULES,
    decide,
    first_exit,
    get_rule,
    rule_indicator,
    validate_exit_config,
    validate_params,
    validate_threshold,
)

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
    with pytest.raises(De3Error, match=r"exit.params.pcee.window=3: no such parameter \(this rule takes patience\)"):
        rule_indicator(get_rule("pcee"), torch.zeros(3, 1, 2), None, {"window": 3})


@pytest.mark.parametrize(
    "rule, params, message",
    [
        ("pcee", {"patience": 0}, "exit.params.pcee.patience=0: Input should be greater than or equal to 1"),
        ("pcee", {"patience": 2.5}, "exit.params.pcee.patience=2.5: Input should be a valid integer"),
        ("dge", {"window": 0}, "exit.params.dge.window=0: Input should be greater than or equal to 1"),
        ("dge", {"divergence": "l2"}, "exit.params.dge.divergence='l2': Input should be 'kl' or 'js'"),
        ("edr", {"lam": -0.5}, "exit.params.edr.lam=-0.5: Input should be greater than or equal to 0"),
        ("edr", {"lam": float("nan")}, "exit.params.edr.lam=nan: Input should be a finite number"),
        ("patience", {"delta": 0}, "exit.params.patience.delta=0: Input should be greater than 0"),
        ("entropy", {"lam": 1}, "exit.params.entropy.lam=1: no such parameter (this rule takes none)"),
    ],
)
def test_bad_rule_parameters_fail_in_one_line(rule, params, message):
    with pytest.raises(De3Error) as info:
        validate_params(get_rule(rule), params)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    with pytest.raises(De3Error, match="exit.params"):  # before: a RuntimeError deep inside, or silence
        rule_indicator(get_rule(rule), torch.randn(4, 3, 2), torch.rand(3, 3, 2), params)


def test_rule_parameters_completed_and_normalised():
    assert validate_params(get_rule("dge"), {"window": 2.0}) == {"divergence": "js", "window": 2}
    assert validate_params(get_rule("edr"), {"lam": 3}) == {"lam": 3.0}
    assert validate_params(get_rule("pcee"), None) == {"patience": 2}
    assert validate_params(get_rule("entropy"), {}) == {}


def test_thresholds_validated_per_rule():
    patience = get_rule("patience")
    # PABEE's patience 0 means "never exit early"; as a threshold here it would mean "exit at layer 1"
    for bad, reason in [(0, "greater than or equal to 1"), (2.5, "valid integer"), ("two", "valid integer")]:
        with pytest.raises(De3Error, match=f"exit.threshold={bad!r} for rule patience: .*{reason}"):
            validate_threshold(patience, bad)
    assert validate_threshold(patience, 2.0) == 2.0  # thresholds.json stores counts as floats
    with pytest.raises(De3Error, match="exit.threshold=nan for rule entropy: Input should be a finite number"):
        validate_threshold(get_rule("entropy"), float("nan"))
    assert validate_threshold(get_rule("entropy"), -0.5) == -0.5  # legal: nobody exits early
    with pytest.raises(De3Error, match="exit.target_speedup=0.5: Input should be greater than or equal to 1"):
        validate_exit_config({"rule": "entropy", "target_speedup": 0.5, "params": {}})
    with pytest.raises(De3Error, match="exit.params.dge.window=0"):  # every rule's params, not only exit.rule's
        validate_exit_config({"rule": "entropy", "params": {"entropy": {}, "dge": {"window": 0}}})


def entropy_by_hand(logits):
    """Normalised entropy of one logit vector, with the math module."""
    exps = [math.exp(v) for v in logits]
    probs = [e / sum(exps) for e in exps]
    return -sum(p * math.log(p) for p in probs) / math.log(len(probs))


def test_edr_recomputed_by_hand_for_three_classes():
    x = torch.tensor(
        [
            [[2.0, 0.5, -1.0], [0.2, 0.1, 0.0], [-1.0, 0.0, 3.0]],  # layer 1: 3 samples, 3 classes
            [[1.0, 1.5, -0.5], [0.0, 2.0, 0.1], [0.3, 0.2, 0.1]],  # layer 2
            [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # the last layer: never an indicator
        ]
    )
    distances = torch.tensor(
        [
            [[1.0, 4.0, 2.5], [3.0, 2.0, 5.0], [2.0, 6.0, 0.5]],
            [[2.0, 1.0, 3.0], [4.0, 4.0, 1.0], [0.5, 0.7, 0.2]],
        ]
    )
    lam = 2.0
    expected_dr, expected_edr = [], []
    for m in range(2):
        for i in range(3):
            row, d = x[m, i].tolist(), distances[m, i].tolist()
            c = row.index(max(row))
            r1, r2 = d[c], min(v for k, v in enumerate(d) if k != c)
            dr = 0.5 * (1 + (r1 - r2) / max(r1, r2))
            entropy = entropy_by_hand(row)
            expected_dr.append(dr)
            expected_edr.append((lam + 1) / (lam / dr + 1 / entropy))
    # a few by eye: sample 0 at layer 1 predicts class 0, r1 = 1, r2 = 2.5; sample 1 at layer 2
    # predicts class 1, r1 = 4, r2 = 1 (class 2, not class 0); sample 2 at layer 2 predicts class 0
    assert expected_dr[0] == pytest.approx(0.5 * (1 - 1.5 / 2.5))
    assert expected_dr[4] == pytest.approx(0.5 * (1 + 3 / 4))
    assert expected_dr[5] == pytest.approx(0.5 * (1 + 0.3 / 0.5))
    dr = rule_indicator(get_rule("dr"), x, distances, {})
    edr = rule_indicator(get_rule("edr"), x, distances, {"lam": lam})
    assert dr.flatten().tolist() == pytest.approx(expected_dr, rel=1e-6)
    assert edr.flatten().tolist() == pytest.approx(expected_edr, rel=1e-6)


def test_dr_and_edr_when_a_class_has_no_prototype():
    inf = float("inf")
    unsure = [0.2, 0.0]  # entropy 0.9855: no rule should let this sample go at layer 1
    x = logits([unsure], [unsure], [unsure])
    # class 1 never occurred in training: r2 does not exist. Before: DR = 0, EDR = 0, exit at layer 1.
    missing = torch.tensor([[[1.0, inf]], [[1.0, 3.0]]])
    entropy = entropy_by_hand(unsure)
    dr = rule_indicator(get_rule("dr"), x, missing, {})
    edr = rule_indicator(get_rule("edr"), x, missing, {"lam": 1.0})
    assert dr[0, 0].item() == 1.0 and edr[0, 0].item() == pytest.approx(2 * entropy / (entropy + 1))
    # layer 2 has both prototypes: DR = 1/6, EDR = 2 / (6 + 1/E) = 0.285, below 0.5
    assert run("edr", x, threshold=0.5, distances=missing, lam=1.0)[0].tolist() == [2]
    assert run("dr", x, threshold=0.5, distances=missing)[0].tolist() == [2]
    # 3 classes, one without a prototype: DR uses the classes that have one
    three = rule_indicator(get_rule("dr"), torch.zeros(2, 1, 3), torch.tensor([[[1.0, inf, 3.0]]]), {})
    assert three.item() == pytest.approx(0.5 * (1 - 2 / 3))
    # the predicted class itself has no prototype: DR = 1
    assert rule_indicator(get_rule("dr"), x, torch.tensor([[[inf, 1.0]], [[inf, inf]]]), {}).tolist() == [[1.0], [1.0]]


def kl_by_hand(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_dge_kl_and_js_values_and_direction_by_hand():
    first, second, third = [0.2, 0.5, 0.3], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]
    x = torch.log(torch.tensor([[first], [second], [third], [first]]))  # softmax(log p) = p
    kl = rule_indicator(get_rule("dge"), x, None, {"divergence": "kl", "window": 1})
    js = rule_indicator(get_rule("dge"), x, None, {"divergence": "js", "window": 1})
    assert math.isinf(kl[0, 0]) and math.isinf(js[0, 0])  # nothing to compare the first exit with
    # KL(this exit ‖ the previous one), not the reverse
    assert kl[1, 0].item() == pytest.approx(kl_by_hand(second, first), rel=1e-5)
    assert kl_by_hand(second, first) != pytest.approx(kl_by_hand(first, second), rel=1e-2)
    middle = [(a + b) / 2 for a, b in zip(third, second)]
    assert js[2, 0].item() == pytest.approx(
        0.5 * kl_by_hand(third, middle) + 0.5 * kl_by_hand(second, middle), rel=1e-5
    )
    # window 2: layer 3 against the mean of layers 1 and 2; layer 2 has only layer 1 before it
    windowed = rule_indicator(get_rule("dge"), x, None, {"divergence": "kl", "window": 2})
    mean = [(a + b) / 2 for a, b in zip(first, second)]
    assert windowed[2, 0].item() == pytest.approx(kl_by_hand(third, mean), rel=1e-5)
    assert windowed[1, 0].item() == pytest.approx(kl_by_hand(second, first), rel=1e-5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["exit.params.pcee.patience=0"], "exit.params.pcee.patience=0: Input should be greater than or equal to 1"),
        (["exit.params.dge.window=0"], "exit.params.dge.window=0: Input should be greater than or equal to 1"),
        (["mode=predict", "exit.rule=patience", "exit.threshold=0"], "exit.threshold=0 for rule patience"),
    ],
)
def test_run_refuses_bad_exit_settings_before_building_anything(overrides, message, tiny_config, tmp_path):
    from de3.jobs import run

    with pytest.raises(De3Error, match=message):
        run(tiny_config("task=rte", *overrides))
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no log: nothing ran


def test_deebert_threshold_in_nats_is_tau_times_ln_c():
    """The README's conversion: DeeBERT's entropy(x) = log Σ eˣ − Σ x·eˣ / Σ eˣ (nats, from its
    code) below S exits exactly where our normalised entropy is below τ = S / ln C."""
    torch.manual_seed(0)
    x = torch.randn(4, 50, 3) * 2  # 3 classes
    exp = x.exp()
    nats = exp.sum(-1).log() - (x * exp).sum(-1) / exp.sum(-1)
    rule = get_rule("entropy")
    indicator = rule_indicator(rule, x, None, {})
    for s in (0.1, 0.3, 0.5, 0.7):
        deebert = decide(rule, x, nats[:-1], s, is_regression=False)[0]
        ours = decide(rule, x, indicator, s / math.log(3), is_regression=False)[0]
        assert torch.equal(deebert, ours) and len(set(ours.tolist())) > 1
