"""Wall-clock speed-up of real early exit over the plain Hugging Face model, as a user measures it.

python -m benchmarks.early_exit_latency --run-dir logs/runs/de3-sst2-minilm/<time> \
    --out benchmarks/latency/cpu

A trained run (its checkpoint, and the thresholds its `thresholds.json` chose on the calibration
split for each rule and target) answers the first `--samples` sentences of its task's dev split
in batches of 1 and 32, formed longest first as `EarlyExitPredictor.predict` forms them:
- the anchor: the encoder's own Hugging Face forward (`AutoModel`, every layer) and the final
  exit head on its output — what a user runs without early exit;
- the project's full-depth path: the predictor with each rule at a threshold nobody passes
  (every layer, every exit head and rule step run);
- real early exit with each rule (entropy, EDR, DGE, patience) at each target of thresholds.json.
Every variant makes one pass over all batches per round; the variants take turns within each
round (their order rotates between rounds), so that drifts of the machine hit all alike. The
speed-up is HF's time / the variant's time within the same round; the table gives its median
over rounds with the range, and the layer ratio (L·N / Σ exit layers) reached on these inputs,
its limit. The time-weighted ratio is the limit once what each sample's layers cost is counted:
HF's own time per batch (median of 3, timed before the rounds), each batch's share of layers run
taken off; measured / time-weighted is what the implementation keeps of it. Every round's
seconds go to `<out>.json`, the table (made from that file alone) to `<out>.md`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.per_exit_table import machine
from de3.data.datamodule import TextTaskDataModule
from de3.data.sampling import LengthSortedSampler
from de3.data.splits import load_splits
from de3.data.tasks import GLUE_TASKS
from de3.exit_cache import ExitCache, collect_exit_cache
from de3.flops import layer_speedup
from de3.models.backbone import EncoderBackbone
from de3.models.exits import pool
from de3.models.multi_exit import MultiExitModel
from de3.predictor import EarlyExitPredictor
from de3.thresholds import never_exits, resolve_exit_setting
from de3.utils.provenance import git_commit

RULES_TIMED = {"entropy": {}, "edr": {"lam": 1.0}, "dge": {"divergence": "js", "window": 1}, "patience": {}}
# measured speed-up / layer ratio at least this, per batch size (CPU goals of the project)
GOAL = {1: 0.9, 32: 0.85}
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a batch passes to both models


def sst2_timing_model(encoder) -> MultiExitModel:
    """An untrained model for step costs (`exit_step_cost`): `encoder` with SST-2's exit heads
    (CLS pooling) and prototypes, in eval mode."""
    return MultiExitModel(EncoderBackbone(encoder), GLUE_TASKS["sst2"].num_outputs, pooling="cls", prototypes={}).eval()


def with_class_mean_prototypes(model: MultiExitModel, loader) -> ExitCache:
    """Set every prototype to its class's mean mapped vector over `loader`; the cached pass."""
    cache = collect_exit_cache(model, loader, keep_mapped=True)
    model.prototypes.update(cache.mapped, cache.labels)
    return collect_exit_cache(model, loader)


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


def predictor_batches(predictor: EarlyExitPredictor, texts: list, batch_size: int) -> list[dict]:
    """`texts` tokenized and batched longest first, as `EarlyExitPredictor.predict` batches them."""
    features = predictor.tokenize(texts)
    order = LengthSortedSampler([len(f["input_ids"]) for f in features]).order
    batches = []
    for start in range(0, len(features), batch_size):
        batch = predictor.collate([features[i] for i in order[start : start + batch_size]])
        batches.append({k: batch[k].to(predictor.device) for k in ENCODER_INPUTS if k in batch})
    return batches


def hugging_face_anchor(predictor: EarlyExitPredictor) -> Callable[[dict], torch.Tensor]:
    """The plain model: the encoder's own Hugging Face forward over every layer, then the final
    exit head on what it reads (the family's final view, pooled as the exits pool)."""
    model = predictor.model
    encoder, last = model.backbone.encoder, model.num_layers - 1

    def forward(batch: dict) -> torch.Tensor:
        hidden = encoder(**batch).last_hidden_state
        pooled = pool(hidden, batch["attention_mask"], model.pooling)
        return model.exits[last](model.read(last, pooled)).float().cpu()

    return forward


def recorded_targets(run_dir: Path) -> dict[str, list[float]]:
    """Per rule in the run's thresholds.json, the targets a threshold was found for."""
    rules = json.loads((run_dir / "thresholds.json").read_text())["rules"]
    return {rule: [float(t) for t, point in entry["thresholds"].items() if point] for rule, entry in rules.items()}


def variants(
    run_dir: Path, rules: list[str], device: str, precision: str
) -> tuple[EarlyExitPredictor, dict[str, tuple[Callable[[dict], Any], dict]]]:
    """A predictor of the run (its model, tokenizer, task, recorded max_seq_length) and every
    timed variant: name → (a function of one batch, what it is). All share one copy of the model."""
    targets = recorded_targets(run_dir)
    base = resolve_exit_setting(rules[0], run_dir=run_dir, threshold=never_exits(rules[0], 99))
    first = EarlyExitPredictor.from_setting(base, device=device, precision=precision)
    timed: dict[str, tuple[Callable[[dict], Any], dict]] = {"hf": (hugging_face_anchor(first), {})}
    for rule in rules:
        if rule not in targets:
            continue
        chosen = [(None, never_exits(rule, first.model.num_layers))] + [(t, None) for t in targets[rule]]
        for target, threshold in chosen:
            setting = resolve_exit_setting(rule, run_dir=run_dir, threshold=threshold, target_speedup=target)
            predictor = EarlyExitPredictor(
                first.model,
                first.tokenizer,
                first.task,
                rule,
                setting.threshold,
                setting.params,
                max_seq_length=first.max_seq_length,
                device=first.device,
                precision=precision,
            )
            name = f"{rule} full depth" if target is None else f"{rule} {target:g}×"
            timed[name] = (
                lambda batch, p=predictor: p.predict_batch(**batch),
                {"rule": rule, "target": target, "threshold": setting.threshold},
            )
    return first, timed


def time_rounds(timed: dict, batches: list[dict], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of one pass over `batches` per variant and round; the order rotates each round.
    A line on stderr per round."""
    names = list(timed)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for fn, _ in timed.values():  # warm-up: allocator, kernels, caches
        fn(batches[0])
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = timed[name][0]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            for batch in batches:
                fn(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name].append(time.perf_counter() - started)
        took = sum(seconds[name][-1] for name in names)
        print(f"round {r + 1}/{rounds}: {len(names)} variants × {len(batches)} batches, {took:.1f} s", file=sys.stderr)
    return seconds


def exit_layers(timed: dict, batches: list[dict]) -> dict[str, list[torch.Tensor]]:
    """Per early-exit variant, each batch's real exit layers (1-based) on these inputs."""
    return {name: [fn(batch).exit_layer for batch in batches] for name, (fn, _) in timed.items() if name != "hf"}


def seconds_of(function: Callable, *args: Any) -> float:
    """Seconds of one call of `function(*args)`."""
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def batch_seconds(fn: Callable[[dict], Any], batches: list[dict], repeats: int = 3) -> list[float]:
    """Each batch's seconds under `fn`, the median of `repeats` timings."""
    return [statistics.median(seconds_of(fn, batch) for _ in range(repeats)) for batch in batches]


def time_weighted_ratio(anchor_seconds: list[float], layers: list[torch.Tensor], num_layers: int) -> float:
    """The speed-up a zero-overhead early exit would reach on these batches: HF's time over that
    time with each batch's share of layers run (Σ exit layers / (L·n)) taken off. Unlike the
    layer ratio it weighs a sample by what its layers cost, so that short sentences leaving early
    save less than long ones would (a cost of the inputs, not of the implementation)."""
    kept = [t * float(d.sum()) / (num_layers * d.numel()) for t, d in zip(anchor_seconds, layers)]
    return sum(anchor_seconds) / sum(kept)


def measure(args: argparse.Namespace) -> dict:
    """Every round's seconds of every variant at every batch size, with what they ran."""
    run_dir = Path(args.run_dir)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    first, timed = variants(run_dir, args.rules, args.device, args.precision)
    task = first.task
    split = task.eval_splits[-1]  # dev: the last eval split (the first is calibration)
    examples = load_splits(task, [split], args.glue_dir, "local")[split][: args.samples]
    texts = [e.texts for e in examples]
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "task": task.name,
        "split": split,
        "samples": len(texts),
        "num_layers": first.model.num_layers,
        "device": str(first.device),
        "precision": args.precision,
        "threads": args.threads,
        "rounds": args.rounds,
        "machine": machine(),
        "load_average_before": load_before,
        "date": datetime.date.today().isoformat(),
        "git_commit": git_commit(),
        "command": "python -m benchmarks.early_exit_latency " + " ".join(args.argv),
        "batch_sizes": {},
    }
    for batch_size in args.batch_sizes:
        batches = predictor_batches(first, texts, batch_size)
        num_layers = first.model.num_layers
        with torch.inference_mode():
            layers = exit_layers(timed, batches)
            anchor_seconds = batch_seconds(timed["hf"][0], batches)
            seconds = time_rounds(timed, batches, args.rounds, first.device)
        rows = {"hf": {"layer_ratio": 1.0, "time_weighted_ratio": 1.0, "batch_seconds": anchor_seconds}}
        for name, per_batch in layers.items():
            rows[name] = {
                "layer_ratio": layer_speedup(torch.cat(per_batch), num_layers),
                "time_weighted_ratio": time_weighted_ratio(anchor_seconds, per_batch, num_layers),
            }
        result["batch_sizes"][str(batch_size)] = {
            name: {**info, **rows[name], "seconds": seconds[name], "batches": len(batches)}
            for name, (_, info) in timed.items()
        }
    return result


def table(result: dict) -> list[str]:
    """Markdown of `measure`'s result: per batch size and variant, ms per batch, the speed-up
    over HF (median of the per-round ratios, min–max), the layer ratio and measured / ratio, and
    the time-weighted ratio (`time_weighted_ratio`; results without it: —) and measured / that."""
    lines = [
        f"## {result['device']}, {result['precision']}: {result['task']} {result['split']}, "
        f"{result['samples']} inputs, {result['num_layers']} layers",
        "",
        f"- Command: `{result['command']}`",
        f"- Machine: {result['machine']}, {result['threads']} thread(s); 1-minute load average "
        f"{result['load_average_before']:.2f} at the start",
        f"- Date: {result['date']}, code at commit {result.get('git_commit') or 'unknown'}; {result['rounds']} "
        "interleaved rounds; raw seconds in the .json beside this file",
        "",
        "| batch | variant | threshold | layer ratio | ms per batch | speed-up over HF (median, min–max) "
        "| measured / layer ratio | time-weighted ratio | measured / time-weighted |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch_size, rows in result["batch_sizes"].items():
        anchor = rows["hf"]["seconds"]
        for name, row in rows.items():
            per_round = [a / s for a, s in zip(anchor, row["seconds"])]
            median = statistics.median(per_round)
            ms = 1000 * statistics.median(row["seconds"]) / row["batches"]
            threshold = "—" if name == "hf" else f"{row['threshold']:.6g}"
            label = "HF `AutoModel` + final exit head (anchor)" if name == "hf" else name
            verdict, weighted, efficiency = "—", "—", "—"
            if name != "hf" and row.get("time_weighted_ratio") is not None:
                weighted = f"{row['time_weighted_ratio']:.2f}"
                efficiency = f"{median / row['time_weighted_ratio']:.2f}"
            if name != "hf" and row.get("target") is not None:
                fraction = median / row["layer_ratio"]
                goal = GOAL.get(int(batch_size))
                flag = " ⚠ below goal" if goal is not None and fraction < goal else ""
                verdict = f"**{fraction:.2f}**{flag}"
            elif name != "hf":
                verdict = f"full depth at {1 / median:.2f}× HF's time"
            lines.append(
                f"| {batch_size} | {label} | {threshold} | {row['layer_ratio']:.2f} | {ms:.2f} | "
                f"{median:.2f}× ({min(per_round):.2f}–{max(per_round):.2f}) | {verdict} | {weighted} | {efficiency} |"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a training run's output folder (with thresholds.json)")
    parser.add_argument("--glue-dir", default=os.environ.get("DE3_GLUE_DIR", "../shared/data/glue"))
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rules", nargs="+", default=list(RULES_TIMED), choices=list(RULES_TIMED))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--out", required=True, help="path without suffix: writes <out>.json and <out>.md")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    result = measure(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(table(result)) + "\n")
    print("\n".join(table(result)))


if __name__ == "__main__":
    main()
