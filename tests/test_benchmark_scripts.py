"""The timing benchmarks' code paths, on a tiny random encoder and the fake GLUE files: a change in
the library (a new key in the batches, a renamed argument) must break here, not in the next
benchmark session."""

import argparse

from benchmarks.early_exit_latency import RULES_TIMED, TARGETS, bench_model
from de3.models.backbone import load_encoder, load_tokenizer


def test_latency_benchmark_times_full_depth_every_rule_and_the_reference(glue_dir):
    tokenizer = load_tokenizer("tiny", model_type="bert")
    sizes = {"num_hidden_layers": 3, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    # 3 layers: DGE has no value at the first exit, so with 2 it would have one exit and no threshold to time
    encoder = load_encoder("tiny", model_type="bert", random_init=True, tokenizer=tokenizer, config_overrides=sizes)
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
