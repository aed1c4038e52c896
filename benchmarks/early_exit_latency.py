"""Measured latency of real early exit against the speed-up ratio it promises.

python -m benchmarks.early_exit_latency > benchmarks/early_exit_latency.md

For each model (all-MiniLM-L6-v2, and random-weight 12-layer base-sized BERT, ALBERT and
DeBERTa-v3 encoders: `RANDOM_MODELS`, `--models` picks) and batch size (1 and 32), on SST-2 dev
sentences (their real lengths under MiniLM's WordPiece tokenizer, max 128):
- full depth: every layer and the final classifier (`MultiExitModel.final_logits`);
- early exit with each rule in `RULES_TIMED` (entropy; DE³'s EDR, which adds a mapping and C
  prototype distances per internal layer; BADGE's DGE; `--rules` picks) at thresholds whose
  speed-up ratio (L·N / Σ exit layers) is ≈ 1.5×, 2×, 3× on these inputs (chosen from a cached
  pass, as the sweep does);
- measured speed-up = full-depth time / early-exit time, divided by the ratio. The FLOPs
  speed-up beside it weighs each sample's layers by its length (the ratio counts layers only).
Also full depth against `AutoModelForSequenceClassification` with the same encoder weights.
Exit heads and mappings are untrained, prototypes are the class means of one pass: the cost of
a layer does not depend on its weights. Times are the median of `--repeats` passes over all
inputs, one process, `--threads` threads, the variants taking turns within each repeat.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification

from benchmarks.per_exit_table import machine
from de3.data.datamodule import TextTaskDataModule
from de3.data.tasks import GLUE_TASKS
from de3.exit_cache import ExitCache, collect_exit_cache
from de3.flops import FlopsModel, layer_speedup
from de3.models.backbone import EncoderBackbone, load_encoder, load_tokenizer
from de3.models.exit_rules import RULES, decide, rule_indicator
from de3.models.multi_exit import MultiExitModel
from de3.predictor import EarlyExitPredictor
from de3.sweep import threshold_grid

RULES_TIMED = {"entropy": {}, "edr": {"lam": 1.0}, "dge": {"divergence": "js", "window": 1}}
TARGET_RATIO = {1: 0.9, 32: 0.8}  # measured / ratio at least this, per batch size
TARGETS = (1.5, 2.0, 3.0)
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a batch passes to both models
BASE_SIZE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
# Random-weight base-sized encoders: (row label, the tiny test config whose family and settings
# they keep, sizes besides BASE_SIZE).
RANDOM_MODELS = {
    "bert": ("bert-base-sized, random (12 layers)", "tiny_bert", {}),
    "albert": ("albert-base-sized, random (12 layers, 1 shared)", "tiny_albert", {"embedding_size": 128}),
    "deberta": ("deberta-v3-base-sized, random (12 layers)", "tiny_deberta", {}),
}


def timed_round_robin(fns: dict[str, object], batches, repeats: int) -> dict[str, float]:
    """Median seconds of a pass over `batches` for each function, the functions taking turns
    within every repeat so that drifts of the machine hit all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            for batch in batches:
                fn(batch)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def predictor_call(predictor: EarlyExitPredictor):
    return lambda batch: predictor.predict_batch(**batch)


def thresholds_for(model, cache, rule_name: str, params) -> dict[float, tuple[float, float, float]]:
    """For each target: (threshold, speed-up ratio, FLOPs speed-up) of the closest grid point."""
    rule = RULES[rule_name]
    indicator = rule_indicator(rule, cache.logits, cache.distances, params)
    costs = FlopsModel.of(model)
    points = []
    for threshold in threshold_grid(rule, indicator, 400):
        layers, _ = decide(rule, cache.logits, indicator, threshold, False)
        points.append(
            (
                threshold,
                layer_speedup(layers, cache.num_layers),
                costs.speedup(layers, cache.lengths, rule.needs_distances),
            )
        )
    return {t: min(points, key=lambda p: abs(p[1] - t)) for t in TARGETS}


def with_class_mean_prototypes(model: MultiExitModel, loader) -> ExitCache:
    """Set every prototype to its class's mean mapped vector over `loader`; the cached pass."""
    cache = collect_exit_cache(model, loader, keep_mapped=True)
    model.prototypes.update(cache.mapped, cache.labels)
    return collect_exit_cache(model, loader)


def sst2_timing_model(encoder) -> MultiExitModel:
    """The model every timing here runs: `encoder` with SST-2's exit heads (CLS pooling) and
    prototypes, in eval mode."""
    return MultiExitModel(EncoderBackbone(encoder), GLUE_TASKS["sst2"].num_outputs, pooling="cls", prototypes={}).eval()


def sst2_dev(tokenizer, glue_dir: str, samples: int) -> TextTaskDataModule:
    """The first `samples` SST-2 dev sentences, set up for validation."""
    datamodule = TextTaskDataModule(
        GLUE_TASKS["sst2"], tokenizer, data_dir=glue_dir, source="local", eval_limit=samples
    )
    datamodule.setup("validate")
    return datamodule


def encoder_inputs(loader) -> list[dict]:
    """Each batch of `loader` with only what the encoder takes: not its labels, nor its "index"."""
    return [{k: b[k] for k in ENCODER_INPUTS if k in b} for b in loader]


def bench_model(name, encoder, tokenizer, args, lines):
    torch.manual_seed(0)
    task = GLUE_TASKS["sst2"]
    model = sst2_timing_model(encoder)
    reference = AutoModelForSequenceClassification.from_config(encoder.config).eval()
    missing, unexpected = reference.base_model.load_state_dict(encoder.state_dict(), strict=False)
    assert not unexpected and all("pooler" in key for key in missing), (missing, unexpected)
    datamodule = sst2_dev(tokenizer, args.glue_dir, args.samples)
    for batch_size in (1, 32):
        datamodule.eval_batch_size = batch_size
        loader = datamodule.val_dataloader()[0]
        cache = with_class_mean_prototypes(model, loader)
        batches = encoder_inputs(loader)
        chosen = {rule: thresholds_for(model, cache, rule, RULES_TIMED[rule]) for rule in args.rules}
        fns = {"full": lambda b: model.final_logits(**b), "hf": lambda b: reference(**b).logits}
        for rule, points in chosen.items():
            for target, (threshold, _, _) in points.items():
                predictor = EarlyExitPredictor(model, tokenizer, task, rule, threshold, RULES_TIMED[rule])
                fns[(rule, target)] = predictor_call(predictor)
        with torch.no_grad():
            seconds = timed_round_robin(fns, batches, args.repeats)
        full, per_batch = seconds["full"], {k: f"{1000 * v / len(batches):.1f}" for k, v in seconds.items()}
        lines.append(f"| {name} | {batch_size} | full depth | 1.00 | 1.00 | {per_batch['full']} | 1.00 | — |")
        for rule, points in chosen.items():
            for target, (threshold, ratio, flops) in points.items():
                measured = full / seconds[(rule, target)]
                verdict = measured / ratio
                flag = "" if verdict >= TARGET_RATIO[batch_size] else " ⚠ below target"
                lines.append(
                    f"| {name} | {batch_size} | {rule} < {threshold:.6g} | {ratio:.2f} | {flops:.2f} | "
                    f"{per_batch[(rule, target)]} | {measured:.2f} | **{verdict:.2f}**{flag} |"
                )
        lines.append(
            f"| {name} | {batch_size} | `AutoModelForSequenceClassification` | — | — | {per_batch['hf']} | "
            f"our full depth = **{seconds['hf'] / full:.2f}×** its throughput | — |"
        )


def random_encoder(key: str, tokenizer):
    """A random-weight base-sized encoder of `RANDOM_MODELS[key]` → (row label, encoder)."""
    label, tiny_config, sizes = RANDOM_MODELS[key]
    config = OmegaConf.to_container(OmegaConf.load(f"conf/backbone/{tiny_config}.yaml"))
    overrides = {**config["config_overrides"], **BASE_SIZE, **sizes}
    encoder = load_encoder(
        key, model_type=config["model_type"], random_init=True, config_overrides=overrides, tokenizer=tokenizer
    )
    return label, encoder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--glue-dir", default="../shared/data/glue")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["minilm", *RANDOM_MODELS], choices=["minilm", *RANDOM_MODELS])
    parser.add_argument("--append", action="store_true", help="a section to append to the existing file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rules", nargs="+", default=list(RULES_TIMED), choices=list(RULES_TIMED))
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # another job on the cores shows here, and in every timing
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer("minilm", path=args.model_dir)
    lines = [
        "| model | batch | exit rule | speed-up ratio | FLOPs speed-up | ms per batch | measured speed-up "
        "| measured / ratio |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for key in args.models:
        if key == "minilm":
            encoder = load_encoder("minilm", path=args.model_dir)
            bench_model("all-MiniLM-L6-v2 (6 layers)", encoder, tokenizer, args, lines)
        else:
            bench_model(*random_encoder(key, tokenizer), tokenizer, args, lines)
    command = (
        f"--models {' '.join(args.models)} --rules {' '.join(args.rules)} "
        f"--samples {args.samples} --repeats {args.repeats} --threads {args.threads}"
    )
    print(
        f"\n## {', '.join(args.models)}\n" if args.append else "# Real early-exit latency against the speed-up ratio\n"
    )
    print(f"- Command: `python -m benchmarks.early_exit_latency {command}{' --append' if args.append else ''}`")
    print(
        f"- Machine: {machine()}, {args.threads} thread(s); 1-minute load average {load_before:.2f} at the start "
        "(near 0 when nothing else was running; well above it, another job shared the cores and timings are noisy)"
    )
    print(f"- Date: {datetime.date.today().isoformat()}")
    print(
        f"- Inputs: the first {args.samples} sentences of SST-2 dev (seeded subset), dynamic padding per batch; "
        f"median of {args.repeats} passes. Targets: measured/ratio ≥ 0.9 at batch 1, ≥ 0.8 at batch 32; "
        "full depth ≥ 0.95× the throughput of `AutoModelForSequenceClassification`. "
        "Cells below their target are marked ⚠.\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
