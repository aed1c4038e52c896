"""The timing benchmarks' code paths, on a tiny random encoder and the fake GLUE files: a change in
the library (a new key in the batches, a renamed argument) must break here, not in the next
benchmark session."""

import argparse

import pytest

from benchmarks.early_exit_latency import RULES_TIMED, TARGETS, bench_model, sst2_timing_model
from benchmarks.exit_step_cost import STEPS, sst2_one_at_a_time, step_costs, table
from de3.models.backbone import load_encoder, load_tokenizer


def tiny_encoder():
    """(tokenizer, 3-layer random BERT): DGE has no value at the first exit, so with 2 layers it
    would have one exit and no threshold to time."""
    tokenizer = load_tokenizer("tiny", model_type="bert")
    sizes = {"num_hidden_layers": 3, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    return tokenizer, load_encoder(
        "tiny", model_type="bert", random_init=True, tokenizer=tokenizer, config_overrides=sizes
    )


def test_latency_benchmark_times_full_depth_every_rule_and_the_reference(glue_dir):
    tokenizer, encoder = tiny_encoder()
    args = argparse.Namespace(glue_dir=str(glue_dir), samples=8, repeats=1, rules=list(RULES_TIMED))
    lines: list[str] = []
    bench_model("tiny", encoder, tokenizer, args, lines)
    rows = [line.strip("| ").split(" | ") for line in lines]
    for batch_size in ("1", "32"):
        timed = [row for row in rows if row[1] == batch_size]
        assert [row[2].split(" < ")[0] for row in timed] == [
            "full depth",
            *(rule for rule in RULES_TIMED for _ in TARGETS),
            "`AutoModelForSequenceClassification`",
        ]
        for row in timed[1:-1]:  # ratio, FLOPs speed-up, ms per batch, measured speed-up: all measured numbers
            assert all(float(cell) > 0 for cell in row[3:7])


def test_step_costs_split_each_rules_pass_into_its_steps_and_put_the_functions_back(glue_dir):
    tokenizer, encoder = tiny_encoder()
    model = sst2_timing_model(encoder)
    batches = sst2_one_at_a_time(model, tokenizer, str(glue_dir), samples=6)
    costs = step_costs(model, tokenizer, batches, list(RULES_TIMED), repeats=1)
    for rule, cost in costs.items():
        assert cost["backbone layers"] > 0 and cost["exit heads"] > 0 and cost["rule indicator"] > 0
        uses_prototypes = rule == "edr"
        assert (cost["prototype mapping"] > 0) == uses_prototypes and (
            cost["prototype distances"] > 0
        ) == uses_prototypes
        assert sum(cost[step] for step in STEPS) + cost["the rest"] == pytest.approx(cost["total"])
    assert len(table(costs)) == 2 + len(RULES_TIMED)
    # the clocks are gone: the model calls its own methods again
    assert "layer" not in vars(model.backbone) and "map_layer" not in vars(model.prototypes)
