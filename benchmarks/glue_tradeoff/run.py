"""Train and sweep every method × task × seed of the GLUE trade-off benchmark, resumably.

python -m benchmarks.glue_tradeoff.run [--tasks rte mrpc] [--methods de3 pabee] [--seeds 42 43 44]

Each run is `python run.py experiment=<method> task=<task> seed=<seed>` with the CPU budget
below, in its own folder `<out>/<task>/<method>/seed<seed>/`. A folder that already holds
`results.json` and `sweep.csv` is finished and skipped, so rerunning the command continues
where it stopped. A method that trains exactly as another (`TRAINED_AS`) does not train the
same weights again: its run is `mode=sweep` on the other's checkpoint with its own exit rule.
Checkpoints (hundreds of MB each) are deleted once no pending run needs them; what the report
needs stays: `results.json` (scores, config, git commit), `sweep.csv`, `exit_cache.pt`.
Then `python -m benchmarks.glue_tradeoff.report` writes RESULTS.md and the curves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from de3.data.tasks import GLUE_TASKS
from de3.utils.config import REPO_ROOT

TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")
METHODS = ("de3", "pabee", "pcee", "deebert", "fastbert", "badge")
SEEDS = (42, 43, 44)
# What fits a 2-core CPU: a seeded 1,000-example slice of each training set, 3 epochs.
BUDGET = (
    "backbone=minilm",
    "data.train_limit=1000",
    "data.max_seq_length=128",
    "model.optimizer.lr=1e-4",
    "logger=csv",
)
EPOCHS = 3
# Two-stage schemes fine-tune the backbone for the same EPOCHS in stage 1, as in their papers,
# then train the internal exits for as many again with the backbone frozen.
TWO_STAGE = ("deebert", "fastbert")
# PCEE-BERT trains as PABEE does (joint loss, w_m = m; same seed, so the same weights bit for bit):
# only its exit rule differs.
TRAINED_AS = {"pcee": "pabee"}
# FastBERT's stage 1 is DeeBERT's (same fine-tuning, same seed, bit for bit): it starts from
# DeeBERT's checkpoint (`loss.stage1_ckpt`) and trains its stage 2 only, for EPOCHS epochs.
STAGE_ONE_OF = {"fastbert": "deebert"}
DEFAULT_OUT = REPO_ROOT / "logs" / "glue_tradeoff"


def applicable(task: str, method: str) -> bool:
    """DE³'s prototypes need classes: it has no run on a regression task."""
    return not (method == "de3" and GLUE_TASKS[task].is_regression)


def epochs(method: str) -> int:
    return 2 * EPOCHS if method in TWO_STAGE else EPOCHS


def run_dir(out: Path, task: str, method: str, seed: int) -> Path:
    return out / task / method / f"seed{seed}"


def is_finished(directory: Path) -> bool:
    return (directory / "results.json").is_file() and (directory / "sweep.csv").is_file()


@dataclass(frozen=True)
class Job:
    """One run of the benchmark: train (or, with `trained_in`, only sweep) `method` on `task`."""

    directory: Path
    task: str
    method: str
    seed: int
    extra: tuple[str, ...] = ()  # further overrides (the sensitivity variants)
    trained_in: Path | None = None  # a finished run of the same training whose checkpoint to sweep
    stage_one_in: Path | None = None  # a finished run whose checkpoint holds this run's stage 1

    def describe(self) -> str:
        return f"{self.task} {self.method} seed{self.seed} {' '.join(self.extra)}".strip()


def quoted(value: object) -> str:
    """A Hydra override value that may hold characters its grammar reserves (a folder `loss.tau=3`)."""
    return "'" + str(value).replace("'", "\\'") + "'"


def checkpoint_of(directory: Path | None) -> str | None:
    """The best checkpoint of a finished run, if it is still on disk."""
    if directory is None or not is_finished(directory):
        return None
    checkpoint = json.loads((directory / "results.json").read_text()).get("checkpoint")
    return checkpoint if checkpoint and Path(checkpoint).is_file() else None


def run_one(job: Job) -> bool:
    """One training run + sweep, or only the sweep of `job.trained_in`'s checkpoint while it is
    on disk; its console output goes to `job.log` beside its results."""
    if job.directory.exists():
        shutil.rmtree(job.directory)  # an unfinished run starts over
    job.directory.mkdir(parents=True)
    checkpoint = checkpoint_of(job.trained_in)
    stage_one = checkpoint_of(job.stage_one_in)
    if checkpoint:
        mode = ["mode=sweep", f"ckpt_path={quoted(checkpoint)}"]
    elif stage_one:
        mode = [f"trainer.max_epochs={EPOCHS}", f"loss.stage1_ckpt={quoted(stage_one)}"]
    else:
        mode = [f"trainer.max_epochs={epochs(job.method)}"]
    command = [
        sys.executable,
        "run.py",
        f"experiment={job.method}",
        f"task={job.task}",
        f"seed={job.seed}",
        *BUDGET,
        *mode,
        *job.extra,
        "callbacks.progress_bar=null",
        f"hydra.run.dir={quoted(job.directory)}",
    ]
    with open(job.directory / "job.log", "w") as log:
        log.write(" ".join(command[1:]) + "\n")
        log.flush()
        done = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT).returncode == 0
    return done and is_finished(job.directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=sorted(GLUE_TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the runs' folders go")
    args = parser.parse_args()
    # seed-major: one complete seed of every (task, method) before the next seed
    jobs = []
    for seed in args.seeds:
        for task in args.tasks:
            for method in args.methods:
                if not applicable(task, method):
                    continue
                donor, stage_one = TRAINED_AS.get(method), STAGE_ONE_OF.get(method)
                jobs.append(
                    Job(
                        run_dir(args.out, task, method, seed),
                        task,
                        method,
                        seed,
                        trained_in=run_dir(args.out, task, donor, seed) if donor in args.methods else None,
                        stage_one_in=run_dir(args.out, task, stage_one, seed) if stage_one in args.methods else None,
                    )
                )
    run_all(jobs)


def run_all(jobs: Sequence[Job]) -> None:
    """Run every job not finished yet, with a progress bar; delete each checkpoint once no
    pending job sweeps it."""
    todo = [job for job in jobs if not is_finished(job.directory)]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already finished; {len(todo)} to go", flush=True)
    failed = []
    for index, job in enumerate(bar := tqdm(todo, unit="run")):
        bar.set_description(job.describe())
        started = time.perf_counter()
        if not run_one(job):
            failed.append(job.directory)
            tqdm.write(f"FAILED: {job.directory} (see its job.log)")
        else:
            tqdm.write(f"done: {job.directory} in {time.perf_counter() - started:.0f} s")
        needed = {donor for later in todo[index + 1 :] for donor in (later.trained_in, later.stage_one_in)}
        for directory in {job.directory, job.trained_in, job.stage_one_in} - needed - {None}:
            shutil.rmtree(directory / "checkpoints", ignore_errors=True)
    if failed:
        raise SystemExit(f"{len(failed)} runs failed: " + ", ".join(map(str, failed)))


if __name__ == "__main__":
    main()
