"""Cost of the post-training sweep against one plain full-depth evaluation pass.

python -m benchmarks.sweep_cost --task sst2 --repeats 3 > benchmarks/sweep_cost.md

The model is all-MiniLM-L6-v2 with DE³ prototypes (weights as loaded: timing does not depend
on training). "Eval pass": every layer, the final classifier only, over the dev split.
"Sweep": the cached pass over the same split (every exit, prototype distances) plus the
simulation of every rule at every threshold, as `ExitSweep` runs it.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks.per_exit_table import machine
from de3.data.datamodule import TextTaskDataModule
from de3.data.tasks import GLUE_TASKS
from de3.exit_cache import collect_exit_cache
from de3.flops import FlopsModel
from de3.models.backbone import EncoderBackbone, load_encoder, load_tokenizer
from de3.models.exits import pool
from de3.models.multi_exit import MultiExitModel
from de3.sweep import sweep_split
from de3.utils.config import REPO_ROOT


def configured_rules() -> dict:
    """Every rule with the parameters `conf/config.yaml` gives it (what the sweep callback uses)."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("config").exit.params)


@torch.no_grad()
def eval_pass(model: MultiExitModel, loader) -> float:
    started = time.perf_counter()
    for batch in loader:
        states = model.backbone(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        model.exits[-1](pool(states[-1], batch["attention_mask"], model.pooling)).argmax(-1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--model-dir", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--glue-dir", default="../shared/data/glue")
    parser.add_argument("--thresholds", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rules = configured_rules()
    torch.manual_seed(0)
    task = GLUE_TASKS[args.task]
    tokenizer = load_tokenizer("minilm", path=args.model_dir)
    model = MultiExitModel(
        EncoderBackbone(load_encoder("minilm", path=args.model_dir)),
        task.num_outputs,
        pooling="mean",
        prototypes={"dim": None},
    ).eval()
    model.prototypes.initialized.fill_(True)
    model.prototypes.prototypes.normal_()
    datamodule = TextTaskDataModule(task, tokenizer, data_dir=args.glue_dir, source="local", eval_batch_size=64)
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()[0]
    costs = FlopsModel.of(model)
    evals, sweeps, simulations, points = [], [], [], 0
    for _ in range(args.repeats):
        evals.append(eval_pass(model, loader))
        started = time.perf_counter()
        cache = collect_exit_cache(model, loader)
        cached = time.perf_counter()
        rows = sweep_split("validation", cache, task, rules, costs, args.thresholds)
        sweeps.append(time.perf_counter() - started)
        simulations.append(time.perf_counter() - cached)
        points = len(rows)
    eval_s, sweep_s, sim_s = (statistics.median(x) for x in (evals, sweeps, simulations))
    n = len(datamodule.datasets["validation"])
    print("# Sweep cost against one full-depth eval pass\n")
    print(f"- Command: `python -m benchmarks.sweep_cost --task {args.task} --repeats {args.repeats}`")
    print(f"- Machine: {machine()}")
    print(f"- Date: {datetime.date.today().isoformat()}")
    print(
        f"- Model: all-MiniLM-L6-v2 (6 layers) with DE³ prototypes; {task.name} dev, {n} samples, batch 64, "
        f"max_seq_length 128; medians of {args.repeats} repeats\n"
    )
    print("| what | seconds |")
    print("|---|---:|")
    print(f"| full-depth eval pass (final exit only) | {eval_s:.2f} |")
    print(f"| sweep: cached pass (all exits + distances) + simulation | {sweep_s:.2f} |")
    print(f"| of which simulation: {len(rules)} rules, {points} (rule, threshold) points | {sim_s:.2f} |")
    print(f"| **ratio sweep / eval pass** | **{sweep_s / eval_s:.2f}×** (target ≤ 1.2×) |")


if __name__ == "__main__":
    main()
