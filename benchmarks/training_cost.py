"""What a training step costs per scheme against plain fine-tuning, and the padding that
length-grouped batches remove.

python -m benchmarks.training_cost --steps 7 > benchmarks/training_cost_steps.md

Steps: all-MiniLM-L6-v2, batch 32, real GLUE training batches (SST-2 at max_seq_length 64,
MRPC at 128; the same batches, in the same order, for every variant). Every variant runs one
step per batch, variants interleaved batch by batch in one process; the table gives the median
over `--steps` batches after `--warmup`. A step is forward, loss, backward, gradient clipping,
AdamW step (and the prototype update for DE³). The anchor is
`AutoModelForSequenceClassification` (one exit, its own pooler head) on the same batches.
Padding: real tokens / padded tokens of one epoch of training batches and of one pass over
the dev split, in a plain shuffle (input order for eval) and in length-grouped (sorted) order.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from transformers import AutoModelForSequenceClassification

from benchmarks.per_exit_table import machine
from de3.data.datamodule import TextTaskDataModule
from de3.data.tasks import GLUE_TASKS
from de3.models.backbone import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
TASKS = {"sst2": 64, "mrpc": 128}


def datamodule(task: str, tokenizer, glue_dir: str, max_seq_length: int, grouped: bool) -> TextTaskDataModule:
    dm = TextTaskDataModule(
        GLUE_TASKS[task],
        tokenizer,
        data_dir=glue_dir,
        source="local",
        max_seq_length=max_seq_length,
        batch_size=32,
        group_by_length=grouped,
    )
    dm.setup("fit")
    return dm


def token_counts(loaders: list) -> tuple[int, int]:
    """(real tokens, padded tokens) over one pass of every loader."""
    real = padded = 0
    for loader in loaders:
        for batch in loader:
            real += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
    return real, padded


def padding_row(task: str, tokenizer, glue_dir: str, max_seq_length: int) -> str:
    """One markdown row: real/padded tokens of a train epoch and a dev pass, before and after."""
    plain = datamodule(task, tokenizer, glue_dir, max_seq_length, grouped=False)
    grouped = datamodule(task, tokenizer, glue_dir, max_seq_length, grouped=True)
    pairs = (
        ([plain.train_dataloader()], [grouped.train_dataloader()]),
        ([plain._loader(split) for split in plain.task.eval_splits], grouped.val_dataloader()),
    )
    cells = []
    for before, after in pairs:
        real, padded_before = token_counts(before)
        _, padded_after = token_counts(after)
        cells += [
            f"{real / padded_before:.2f}",
            f"{real / padded_after:.2f}",
            f"{1 - padded_after / padded_before:.0%}",
        ]
    return f"| {task} | {max_seq_length} | " + " | ".join(cells) + " |"


def anchor_step(model_dir: str, num_labels: int) -> Callable[[dict], None]:
    """Plain fine-tuning: `AutoModelForSequenceClassification`, one step on a batch."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)

    def step(batch: dict) -> None:
        model(**{key: value for key, value in batch.items() if key != "index"}).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    return step


def build_module(task: str, scheme: str, models_dir: str, *overrides: str):
    """`MultiExitModule` built from the real config with `loss=scheme`, in its last stage."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = [f"task={task}", "backbone=minilm", f"loss={scheme}", f"paths.models_dir={models_dir}"]
        cfg = compose("config", overrides=[*base, *overrides])
    torch.manual_seed(0)
    module = instantiate(cfg.model)
    stage = module.loss_fn.num_stages - 1
    module.loss_fn.enter_stage(stage, module.model)
    module._entered_stage = stage
    return module


def scheme_step(module, cached_batches: list[dict] | None = None) -> Callable[[dict], None]:
    """One training step of `module`; with `cached_batches`, stage 2 on their cached layer outputs
    (computed here, untimed, as `cache_pooled_layers` does once per run)."""
    if cached_batches is not None:
        size = 1 + max(int(b["index"].max()) for b in cached_batches)
        module._layer_cache = torch.zeros(size, module.model.num_layers, module.model.backbone.hidden_size)
        for batch in cached_batches:
            module._layer_cache[batch["index"]] = cache_pass(module)(batch).transpose(0, 1)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5)

    def step(batch: dict) -> None:
        module.training_step(batch, 0).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        module.on_train_batch_end(None, batch, 0)

    return step


def cache_pass(module) -> Callable[[dict], torch.Tensor]:
    """The frozen backbone's share of stage 2 with cached layers: one eval-mode forward of a batch."""

    @torch.no_grad()
    def forward(batch: dict) -> torch.Tensor:
        module.model.eval()
        try:
            return module.model.pooled_layers(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        finally:
            module.model.train()

    return forward


def step_rows(task: str, max_seq_length: int, args) -> list[str]:
    """Markdown rows: median seconds per step and examples/s per variant, interleaved by batch."""
    tokenizer = load_tokenizer("minilm", f"{args.models_dir}/all-MiniLM-L6-v2", model_type="bert")
    dm = datamodule(task, tokenizer, args.glue_dir, max_seq_length, grouped=False)
    batches = []
    for batch in dm.train_dataloader():
        batches.append(dict(batch))
        if len(batches) == args.warmup + args.steps:
            break
    variants = {
        "plain fine-tuning (anchor)": anchor_step(f"{args.models_dir}/all-MiniLM-L6-v2", GLUE_TASKS[task].num_outputs)
    }
    for scheme in ("joint", "de3", "badge"):
        variants[f"loss={scheme}"] = scheme_step(build_module(task, scheme, args.models_dir))
    uncached = build_module(task, "two_stage", args.models_dir, "loss.cache_layers=false")
    variants["loss=two_stage, stage 2, backbone run every step"] = scheme_step(uncached)
    cached = build_module(task, "two_stage", args.models_dir)
    variants["loss=two_stage, stage 2 on cached layers"] = scheme_step(cached, batches)
    variants["stage 2's cache pass, per batch (once per run)"] = cache_pass(cached)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for batch in batches:
        for name, step in variants.items():
            started = time.perf_counter()
            step(batch)
            times[name].append(time.perf_counter() - started)
    anchor = statistics.median(times["plain fine-tuning (anchor)"][args.warmup :])
    rows = []
    for name, values in times.items():
        median = statistics.median(values[args.warmup :])
        tokens = statistics.mean(b["input_ids"].shape[1] for b in batches[args.warmup :])
        cells = [task, f"{max_seq_length} ({tokens:.0f} padded)", name, f"{median:.3f}", f"{32 / median:.0f}"]
        rows.append("| " + " | ".join(cells) + f" | {median / anchor:.2f}× |")
    return rows


RUN = (sys.executable, "run.py")
END_TO_END = (
    "task=sst2",
    "backbone=minilm",
    "loss=joint",
    "data.max_seq_length=64",
    "trainer.max_epochs=3",
    "logger=csv",
    "callbacks.progress_bar=null",
)


def end_to_end_rows(repos: list[Path], train_limit: int, out: Path) -> list[str]:
    """Markdown rows: wall time of one whole `run.py` run (train, evaluate, sweep) per checkout,
    one after another (on an otherwise idle machine, each has it to itself)."""
    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for repo in repos:
        command = [*RUN, *END_TO_END, f"data.train_limit={train_limit}", f"hydra.run.dir={out / repo.name}"]
        started = time.perf_counter()
        with open(out / f"{repo.name}.log", "w") as log:
            if subprocess.run(command, cwd=repo, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                raise SystemExit(f"{repo}: run failed, see {out / repo.name}.log")
        seconds[repo] = time.perf_counter() - started
    rows = []
    for repo in repos:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
        rows.append(f"| {repo.name} ({commit.stdout.strip()}) | {train_limit} | {seconds[repo]:.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default=str(REPO.parent / "shared" / "models"))
    parser.add_argument("--glue-dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-steps", action="store_true", help="no step table")
    parser.add_argument("--skip-padding", action="store_true", help="no padding table")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="of the step table")
    parser.add_argument("--end-to-end", nargs="*", type=Path, default=[], help="checkouts to time one whole run in")
    parser.add_argument("--train-limit", type=int, default=2000, help="training examples of the end-to-end run")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "training_cost")
    args = parser.parse_args()
    print("# Training cost: step time per scheme, and padding\n")
    print(f"Command: `python -m benchmarks.training_cost {' '.join(sys.argv[1:])}`  ")
    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the start  ")
    print(f"Date: {datetime.date.today().isoformat()}\n")
    if not args.skip_padding:
        print("## Padding removed by length-grouped batches (all-MiniLM-L6-v2 tokenizer, batch 32)\n")
        print("Real tokens / padded tokens; train: one epoch, plain shuffle vs length-grouped (mega-batches")
        print("of 50 batches); dev: one pass (eval batch 64), input order vs sorted by length.\n")
        print(
            "| task | max_seq_length | train before | train after | train padding removed"
            " | dev before | dev after | dev padding removed |"
        )
        print("|---|---|---|---|---|---|---|---|")
        tokenizer = load_tokenizer("minilm", f"{args.models_dir}/all-MiniLM-L6-v2", model_type="bert")
        for task, length in (("mrpc", 128), ("rte", 128), ("sst2", 64)):
            print(padding_row(task, tokenizer, args.glue_dir, length), flush=True)
    if not args.skip_steps:
        print(f"\n## One training step on the same batch (median of {args.steps} after {args.warmup} warm-up)\n")
        print("| task | max_seq_length | variant | s/step | examples/s | × anchor |")
        print("|---|---|---|---|---|---|")
        for task in args.tasks:
            length = TASKS[task]
            for row in step_rows(task, length, args):
                print(row, flush=True)
    if args.end_to_end:
        print("\n## One whole run end to end (train, evaluate the best checkpoint, sweep)\n")
        print(f"`python run.py {' '.join(END_TO_END)} data.train_limit={args.train_limit}` in each checkout.\n")
        print("| checkout | training examples | wall time (s) |")
        print("|---|---|---|")
        for row in end_to_end_rows(args.end_to_end, args.train_limit, args.out):
            print(row, flush=True)


if __name__ == "__main__":
    main()
