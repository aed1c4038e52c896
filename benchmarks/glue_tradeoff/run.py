"""Train and sweep every method × task × seed of the GLUE trade-off benchmark, resumably.

python -m benchmarks.glue_tradeoff.run [--tasks rte mrpc] [--methods de3 pabee] [--seeds 42 43 44]

Each run is `python run.py experiment=<method> task=<task> seed=<seed>` with the CPU budget
below, in its own folder `<out>/<task>/<method>/seed<seed>/`. A folder that already holds
`results.json` and `sweep.csv` is finished and skipped, so rerunning the command continues
where it stopped. After a run its checkpoints are deleted (hundreds of MB each); what the
report needs stays: `results.json` (scores, config, git commit), `sweep.csv`, `exit_cache.pt`.
Then `python -m benchmarks.glue_tradeoff.report` writes RESULTS.md and the curves.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
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


def run_one(directory: Path, task: str, method: str, seed: int, extra: Sequence[str] = ()) -> bool:
    """One training run + sweep (with `extra` overrides); its console output goes to `job.log`
    beside its results."""
    if directory.exists():
        shutil.rmtree(directory)  # an unfinished run starts over
    directory.mkdir(parents=True)
    command = [
        sys.executable,
        "run.py",
        f"experiment={method}",
        f"task={task}",
        f"seed={seed}",
        *BUDGET,
        f"trainer.max_epochs={epochs(method)}",
        *extra,
        "callbacks.progress_bar=null",
        f"hydra.run.dir={directory}",
    ]
    with open(directory / "job.log", "w") as log:
        log.write(" ".join(command[1:]) + "\n")
        log.flush()
        done = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT).returncode == 0
    shutil.rmtree(directory / "checkpoints", ignore_errors=True)
    return done and is_finished(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=sorted(GLUE_TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the runs' folders go")
    args = parser.parse_args()
    # seed-major: one complete seed of every (task, method) before the next seed
    jobs = [
        (task, method, seed)
        for seed in args.seeds
        for task in args.tasks
        for method in args.methods
        if applicable(task, method)
    ]
    run_all([(run_dir(args.out, *job), *job, ()) for job in jobs])


def run_all(jobs: Sequence[tuple[Path, str, str, int, Sequence[str]]]) -> None:
    """Run every (folder, task, method, seed, extra overrides) not finished yet, with a progress bar."""
    todo = [job for job in jobs if not is_finished(job[0])]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already finished; {len(todo)} to go", flush=True)
    failed = []
    for directory, task, method, seed, extra in (bar := tqdm(todo, unit="run")):
        bar.set_description(f"{task} {method} seed{seed} {' '.join(extra)}".strip())
        started = time.perf_counter()
        if not run_one(directory, task, method, seed, extra):
            failed.append(directory)
            tqdm.write(f"FAILED: {directory} (see its job.log)")
        else:
            tqdm.write(f"done: {directory} in {time.perf_counter() - started:.0f} s")
    if failed:
        raise SystemExit(f"{len(failed)} runs failed: " + ", ".join(map(str, failed)))


if __name__ == "__main__":
    main()
