"""Where real early exit spends its time per sample, step by step, for each timed exit rule.

python -m benchmarks.exit_step_cost > benchmarks/latency/step_cost.md

`early_exit_latency` measures how far each rule's latency falls short of its speed-up ratio; this
says which step the shortfall is in. Every sample runs every layer (a threshold no indicator goes
below), so the rules do the same backbone work and differ only in their own steps. The steps are
timed by wrapping the functions `EarlyExitPredictor.predict_batch` calls — the backbone's layers,
the exit heads, the prototype mapping and distances (EDR), the rule's step (its indicator) — with
a clock; "the rest" is the loop itself (the exit decision, bookkeeping). Model and
inputs as in `early_exit_latency`: MiniLM, untrained exit heads and mappings, class-mean prototypes,
the first `--samples` SST-2 dev sentences.

Three tables follow: how many tensor operations a backbone layer and each rule's step run (what
a GPU launches one by one unless the step is captured), what the exit head and EDR's mapping pay
to fetch their weights after a layer, and a layer step's time by batch size (what layer-by-layer
serving pays for small cohorts).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from unittest.mock import patch

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.early_exit_latency import (
    RULES_TIMED,
    encoder_inputs,
    seconds_of,
    sst2_dev,
    sst2_timing_model,
    with_class_mean_prototypes,
)
from benchmarks.per_exit_table import machine
from de3.data.tasks import GLUE_TASKS
from de3.models.backbone import load_encoder, load_tokenizer
from de3.models.encoder_families import LayerInputs
from de3.models.multi_exit import MultiExitModel
from de3.predictor import EarlyExitPredictor
from de3.thresholds import never_exits

BATCH_SIZES = [1, 2, 4, 8, 16, 32]
STEPS = ("backbone layers", "exit heads", "prototype mapping", "prototype distances", "rule indicator")


class StepClock:
    """Seconds spent in each wrapped function, summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, step: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            started = time.perf_counter()
            result = function(*args, **kwargs)
            self.seconds[step] += time.perf_counter() - started
            return result

        return timed


@contextmanager
def clock_the_steps(model: MultiExitModel, predictors: list[EarlyExitPredictor]) -> Iterator[StepClock]:
    """While open, the steps of `predict_batch` on this model (and the rule step of each
    predictor) run under a `StepClock`; the originals are back on exit."""
    clock = StepClock()
    functions = [  # in STEPS' order, but the rule's step
        (model.backbone, "layer"),
        (model, "exit_logits"),
        (model.prototypes, "map_layer"),
        (model.prototypes, "layer_distances"),
    ]
    with ExitStack() as stack:
        for step, (owner, name) in zip(STEPS, functions):
            stack.enter_context(patch.object(owner, name, clock.wrap(step, getattr(owner, name))))
        for predictor in predictors:
            timed_rule = replace(predictor.rule, step=clock.wrap(STEPS[-1], predictor.rule.step))
            stack.enter_context(patch.object(predictor, "rule", timed_rule))
        yield clock


def sst2_one_at_a_time(model: MultiExitModel, tokenizer, glue_dir: str, samples: int) -> list[dict]:
    """The first `samples` SST-2 dev sentences as batches of one (encoder inputs only), after
    setting the model's prototypes to their class means over them."""
    datamodule = sst2_dev(tokenizer, glue_dir, samples)
    datamodule.eval_batch_size = 1
    loader = datamodule.val_dataloader()[0]
    with_class_mean_prototypes(model, loader)
    return encoder_inputs(loader)


def never_exiting_predictors(model: MultiExitModel, tokenizer, rules: list[str]) -> dict[str, EarlyExitPredictor]:
    """Per rule, an SST-2 predictor on `model` at a threshold no sample passes (every layer runs)."""
    task, layers = GLUE_TASKS["sst2"], model.num_layers
    return {
        rule: EarlyExitPredictor(model, tokenizer, task, rule, never_exits(rule, layers), RULES_TIMED[rule])
        for rule in rules
    }


def step_costs(model, tokenizer, batches, rules: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """Per rule: milliseconds per batch of each step and of the whole pass ("total"), each the
    median over `repeats` passes on its own (so with more than one pass the steps need not add up
    to the total exactly), the rules taking turns within each pass."""
    predictors = never_exiting_predictors(model, tokenizer, rules)
    passes: dict[str, list[dict[str, float]]] = {rule: [] for rule in rules}
    with clock_the_steps(model, list(predictors.values())) as clock:
        for repeat in range(repeats):
            print(f"pass {repeat + 1}/{repeats} of {len(rules)} rules over {len(batches)} batches", file=sys.stderr)
            for rule, predictor in predictors.items():
                clock.seconds.clear()
                started = time.perf_counter()
                for batch in batches:
                    predictor.predict_batch(**batch)
                total = time.perf_counter() - started
                steps = {step: clock.seconds.get(step, 0.0) for step in STEPS}
                passes[rule].append({**steps, "the rest": total - sum(steps.values()), "total": total})
    return {
        rule: {key: 1000 * statistics.median(p[key] for p in runs) / len(batches) for key in runs[0]}
        for rule, runs in passes.items()
    }


def embedded(model: MultiExitModel, batch: dict) -> tuple[torch.Tensor, LayerInputs]:
    """A tokenized batch's embedding output [B, T, H] and what the layers take besides it."""
    hidden = model.backbone.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    return hidden, model.backbone.layer_inputs(hidden, batch["attention_mask"])


@torch.inference_mode()
def weights_out_of_cache(model: MultiExitModel, batch: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """The steps that read weights of their own (the exit head; EDR's prototype mapping), each in
    microseconds as real early exit meets it — right after a backbone layer streamed its weights
    through the caches — and run again at once, with its weights in cache: medians over the
    internal layers and `repeats`. The difference is the cost of fetching those weights."""
    backbone, prototypes = model.backbone, model.prototypes
    hidden, inputs = embedded(model, batch)
    steps = {
        "exit head": lambda m, pooled: model.exits[m](pooled),
        "prototype mapping": lambda m, pooled: prototypes.map_layer(m, pooled),
    }
    timings: dict[str, tuple[list[float], list[float]]] = {step: ([], []) for step in steps}
    for _ in range(repeats):
        for m in range(model.num_layers - 1):
            for step, run in steps.items():
                out = backbone.layer(m, hidden, inputs)
                pooled = out[:, 0]
                after_layer, again = timings[step]
                after_layer.append(seconds_of(run, m, pooled))
                again.append(seconds_of(run, m, pooled))
    return {step: (1e6 * statistics.median(a), 1e6 * statistics.median(b)) for step, (a, b) in timings.items()}


@torch.inference_mode()
def layer_cost_by_batch_size(model: MultiExitModel, batch: dict, sizes: list[int], repeats: int) -> dict[int, float]:
    """A backbone layer's time on `batch` (one sample) copied n times, for each n in `sizes`: µs
    per layer step, the median over `repeats` passes of every layer. Layer-by-layer batching runs
    a step per occupied layer, so its cohorts are smaller than a full-depth server's batches."""
    backbone = model.backbone
    per_step = {}
    for n in sizes:
        hidden, inputs = embedded(model, {key: value.expand(n, -1) for key, value in batch.items()})

        def every_layer(hidden=hidden, inputs=inputs):
            for m in range(model.num_layers):
                backbone.layer(m, hidden, inputs)

        every_layer()
        per_step[n] = 1e6 * statistics.median(seconds_of(every_layer) for _ in range(repeats)) / model.num_layers
    return per_step


class OperationCounter(TorchDispatchMode):
    """While active, counts the tensor operations that compute (views excluded): on a GPU each
    is about one kernel launch, the cost that dominates a layer at batch 1 there."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


@torch.inference_mode()
def operations_per_layer(predictor: EarlyExitPredictor, batch: dict) -> tuple[int, int]:
    """(operations of one backbone layer, operations of one early-exit step around it: exit
    head, the rule's step, the decision), counted on the second layer (the rule has a state)."""
    model, running = predictor.model, predictor.start(**batch)
    predictor.advance(running)
    with OperationCounter() as layer:
        model.backbone.layer(running.layer, running.hidden, running.layer_inputs)
    with OperationCounter() as step:
        predictor.advance(running)
    return layer.count, step.count - layer.count


def table(costs: dict[str, dict[str, float]]) -> list[str]:
    """Markdown: a row per rule, a column per step (ms per sample), and the rule's extra time over
    the first rule's pass."""
    columns = [*STEPS, "the rest", "total"]
    first = next(iter(costs))
    lines = [
        f"| exit rule | {' | '.join(columns)} | total − {first} |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    for rule, cost in costs.items():
        cells = [f"{cost[c]:.3f}" for c in columns]
        lines.append(f"| {rule} | {' | '.join(cells)} | {cost['total'] - costs[first]['total']:+.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--glue-dir", default="../shared/data/glue")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = load_tokenizer("minilm", path=args.model_dir)
    model = sst2_timing_model(load_encoder("minilm", path=args.model_dir))
    batches = sst2_one_at_a_time(model, tokenizer, args.glue_dir, args.samples)
    costs = step_costs(model, tokenizer, batches, list(RULES_TIMED), args.repeats)
    print("\n## Where batch-1 early exit spends its time, step by step (MiniLM)\n")
    command = f"--samples {args.samples} --repeats {args.repeats} --threads {args.threads}"
    print(f"- Command: `python -m benchmarks.exit_step_cost {command}`")
    print(f"- Machine: {machine()}, {args.threads} thread(s); 1-minute load average {load_before:.2f} at the start")
    print(f"- Date: {datetime.date.today().isoformat()}")
    print(
        "- Every sample runs all 6 layers (a threshold no sample passes), batch 1; milliseconds per sample, median of "
        f"{args.repeats} passes over the first {args.samples} SST-2 dev sentences.\n"
    )
    print("\n".join(table(costs)))
    print(
        "\nOperations per layer (tensor operations that compute, views excluded; on a GPU about one kernel launch "
        "each), batch 1, on the second layer: a backbone layer, and what early exit adds to it (exit head, the "
        "rule's step, the decision).\n"
    )
    print("| exit rule | backbone layer | early exit's step | step ÷ layer |")
    print("|---|---:|---:|---:|")
    for rule, predictor in never_exiting_predictors(model, tokenizer, list(RULES_TIMED)).items():
        layer, step = operations_per_layer(predictor, batches[0])
        print(f"| {rule} | {layer} | {step} | {step / layer:.2f} |")
    fetch = weights_out_of_cache(model, batches[len(batches) // 2], args.repeats * 20)
    print(
        "\nThe steps with weights of their own, µs per call at batch 1 (median over internal layers and "
        f"{args.repeats * 20} repeats): right after a backbone layer ran, as in early exit, and at once again, "
        "their weights in cache.\n"
    )
    print("| step | after a layer | again, in cache | fetching its weights |")
    print("|---|---:|---:|---:|")
    for step, (after_layer, again) in fetch.items():
        print(f"| {step} | {after_layer:.1f} | {again:.1f} | {after_layer - again:+.1f} |")
    sample = batches[len(batches) // 2]
    print(
        f"\nA backbone layer's step by batch size: sample {len(batches) // 2} ({sample['input_ids'].shape[1]} tokens) "
        f"copied n times; µs per layer step and per sample in it (median of {args.repeats} passes over the layers), "
        f"at {args.threads} thread(s) and at one, as `mode=serve` runs by default.\n"
    )
    threads = list(dict.fromkeys([args.threads, 1]))
    steps = {}
    for count in threads:
        torch.set_num_threads(count)
        steps[count] = layer_cost_by_batch_size(model, sample, BATCH_SIZES, args.repeats)
    print("| n | " + " | ".join(f"{t} thread(s): step | per sample" for t in threads) + " |")
    print("|---:|" + "---:|---:|" * len(threads))
    for n in BATCH_SIZES:
        print(f"| {n} | " + " | ".join(f"{steps[t][n]:.0f} | {steps[t][n] / n:.0f}" for t in threads) + " |")


if __name__ == "__main__":
    main()
