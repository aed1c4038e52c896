"""Training-step cost of `loss=de3` over `loss=joint`, and what DE³ adds per exit.

python -m benchmarks.de3_overhead --steps 20 > benchmarks/de3_overhead.md

Same backbone (all-MiniLM-L6-v2), same batch (32 real RTE training pairs, max_seq_length 128):
the median time of a full training step (forward, loss, backward, AdamW step, and for DE³ the
prototype initialisation and EMA update) for each scheme.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import torch

from benchmarks.per_exit_table import machine
from de3.data.datamodule import TextTaskDataModule
from de3.models.module import MultiExitModule

LOSSES = {
    "joint": ({"_target_": "de3.models.losses.JointLoss", "weighting": "ascending"}, None),
    "de3": (
        {"_target_": "de3.models.losses.De3Loss", "weighting": "ascending", "alpha": 1.0, "tau": 1.0},
        {"dim": None, "gamma": 0.1, "detach_backbone": False},
    ),
}


def step_times(loss: dict, prototypes: dict | None, args, batch) -> tuple[float, MultiExitModule]:
    torch.manual_seed(0)
    module = MultiExitModule(
        task={"name": "rte"},
        backbone={"name": "minilm", "path": args.model_dir},
        loss=loss,
        exits={"pooling": "mean", "dropout": 0.1},
        optimizer={"lr": 5e-5, "weight_decay": 0.01, "warmup_ratio": 0.0},
        prototypes=prototypes,
    )
    optimizer = torch.optim.AdamW(module.parameters(), lr=5e-5)
    times = []
    for _ in range(args.warmup + args.steps):
        started = time.perf_counter()
        loss_value = module.training_step(batch, 0)
        loss_value.backward()
        optimizer.step()
        optimizer.zero_grad()
        module.on_train_batch_end(None, batch, 0)
        times.append(time.perf_counter() - started)
    return statistics.median(times[args.warmup :]), module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--glue-dir", default="../shared/data/glue")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    probe = MultiExitModule(
        task={"name": "rte"},
        backbone={"name": "minilm", "path": args.model_dir},
        loss=LOSSES["joint"][0],
        exits={"pooling": "mean"},
        optimizer={"lr": 5e-5, "weight_decay": 0.0, "warmup_ratio": 0.0},
    )
    datamodule = TextTaskDataModule(
        probe.task, probe.tokenizer, data_dir=args.glue_dir, source="local", batch_size=32, max_seq_length=128
    )
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    results = {name: step_times(loss, protos, args, batch) for name, (loss, protos) in LOSSES.items()}
    joint_s, de3_s = results["joint"][0], results["de3"][0]
    de3_model = results["de3"][1].model
    protos, head = de3_model.prototypes, de3_model.exits[0]
    mapping_params = sum(p.numel() for p in protos.mappings[0].parameters())
    head_params = sum(p.numel() for p in head.parameters())
    print("# DE³ training overhead\n")
    print(f"- Command: `python -m benchmarks.de3_overhead --steps {args.steps}`")
    print(f"- Machine: {machine()}")
    print(f"- Date: {datetime.date.today().isoformat()}")
    print(
        f"- all-MiniLM-L6-v2 (6 layers, hidden 384), one batch of 32 RTE training pairs padded to "
        f"{batch['input_ids'].shape[1]} tokens; median of {args.steps} steps after {args.warmup} warm-up steps\n"
    )
    print("| training scheme | step time (s) |")
    print("|---|---:|")
    print(f"| loss=joint | {joint_s:.3f} |")
    print(f"| loss=de3 | {de3_s:.3f} |")
    print(f"| **ratio de3 / joint** | **{de3_s / joint_s:.3f}×** |\n")
    internal = len(protos.mappings)
    print(
        f"What DE³ adds per internal exit (there are L − 1 = {internal}), metric dimension "
        f"d = {protos.dim}, C = {protos.prototypes.shape[1]}:\n"
    )
    print("| | exit head alone | DE³ addition |")
    print("|---|---:|---:|")
    print(f"| trainable parameters | {head_params:,} | {mapping_params:,} (mapping layer) |")
    print(f"| buffers (prototypes) | — | {protos.prototypes[0].numel():,} values |")
    print(f"| FLOPs per sample at inference | {head.flops():,} | {protos.flops_per_layer():,} (mapping + distances) |")
    total = sum(p.numel() for p in de3_model.parameters())
    print(
        f"\nWhole DE³ model: {total:,} parameters, of which {internal * mapping_params:,} "
        f"({100 * internal * mapping_params / total:.2f}%) are mapping layers."
    )


if __name__ == "__main__":
    main()
