"""Train and sweep every method × task × seed of the GLUE trade-off benchmark, resumably.

python -m benchmarks.glue_tradeoff.run [--tasks rte mrpc] [--methods de3 pabee] [--seeds 42 43 44] [--commit] [--list]

Each run is `python run.py experiment=<method> task=<task> seed=<seed>` with the budget below,
in its own folder `<out>/<task>/<method>/seed<seed>/`. Checkpoints are selected and every
threshold chosen on the calibration split (the config's default: a seeded, stratified 10% of
the training file, at least 300 rows, held out from training); dev is only scored. A folder
that already holds `results.json` and `sweep.csv`, here or in its kept copy (below), is finished
and skipped, so rerunning the command continues where it stopped, on this machine or a fresh
clone of the repository. A method that trains exactly as another (`TRAINED_AS`)
does not train the same weights again: its run is `mode=sweep` on the other's checkpoint with
its own exit rule. Checkpoints (hundreds of MB each) are deleted once no pending run needs them.

Each finished run's small text outputs (`KEPT`, plus `edr_lambda.csv` for de3: EDR re-simulated
at every λ of `LAMBDAS` from its exit cache) are copied to `benchmarks/glue_tradeoff/runs/`
as they finish (`--commit`: and committed), and `python -m benchmarks.glue_tradeoff.report`
builds RESULTS.md and the curves from those copies alone.

DE³ under the same tuning budget (`--tune-de3`, then `--methods de3-tuned`): its open design
choices (`DE3_RECIPES`: one joint stage or two, DAR's gradient into the backbone or not, DAR's
weight) are tried on the tuning task and seed as every method's learning rates are, the one with
the largest calibration area is written to tuned.json (`recipes`), and `de3-tuned` runs it on
every task and seed, beside the protocol's `de3`. `--list` prints a plan and its expected time
without running it.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from de3.data.tasks import GLUE_TASKS
from de3.exit_cache import load_exit_caches
from de3.sweep import frontier_area, sweep_splits
from de3.utils.config import REPO_ROOT
from de3.utils.io import csv_text, write_text_atomic

TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")
METHODS = ("de3", "pabee", "pcee", "deebert", "fastbert", "badge")
SEEDS = (42, 43, 44)
EXTRA_SEEDS = {"sst2": (45, 46), "mrpc": (45, 46)}  # where the methods are closest
BUDGET = ("backbone=minilm", "logger=csv")  # the learning rate is tuned (CONFIGS)
# The whole training file (less the calibration split), except SST-2: 16,000 sentences.
TASK_BUDGET = {"sst2": ("data.train_limit=16000", "data.max_seq_length=64")}
DEFAULT_TASK_BUDGET = ("data.max_seq_length=128",)
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
# Hyperparameters: every method tries the same configurations on the tuning task and seed; the
# one with the largest calibration-split frontier area (its own rule) is frozen in TUNED for
# every task and seed.
CONFIGS = ("model.optimizer.lr=5e-05", "model.optimizer.lr=0.0001", "model.optimizer.lr=0.0002")
TUNING_TASK, TUNING_SEED = "sst2", 42
TUNED = Path(__file__).resolve().parent / "tuned.json"
# The compute-matched control: joint schemes trained as long as the two-stage ones in all
# (MRPC first: its seed's three runs take about a third of SST-2's).
MATCHED_TASKS, MATCHED_METHODS, MATCHED = ("mrpc", "sst2"), ("de3", "pabee", "badge"), "-matched"
KEPT = ("results.json", "sweep.csv", "summary.md", "thresholds.json")
LAMBDAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 16.0)  # EDR's λ: 0 is entropy alone, λ → ∞ is DR alone
LAMBDA_FILE = "edr_lambda.csv"
KEPT_RUNS = Path(__file__).resolve().parent / "runs"
DEFAULT_OUT = REPO_ROOT / "logs" / "glue_tradeoff"


@dataclass(frozen=True)
class Recipe:
    """One of DE³'s configurations tried for `de3-tuned`: its experiment, the method whose tuned
    learning rate it takes (the scheme it builds on), further overrides, and for a two-stage one
    the method whose stage 1 it is (shared when that run's checkpoint is on disk)."""

    experiment: str
    lr_of: str
    overrides: tuple[str, ...] = ()
    stage_one_of: str | None = None

    @property
    def timed_as(self) -> str:
        """The protocol method that trains as long (for the expected time before any run of it)."""
        return self.stage_one_of or "de3"

    def is_protocol_de3(self) -> bool:
        """Whether it trains exactly as the protocol's `de3` (whose runs are then its runs)."""
        return self.experiment == self.lr_of == "de3" and not self.overrides and self.stage_one_of is None


DE3_TUNED = "de3-tuned"
DE3_METHODS = ("de3", DE3_TUNED)
# Detached, α only scales the mapping layers' gradient: AdamW's steps hardly depend on it, but the
# trainer's gradient-norm clip counts it, so a small α leaves the backbone's and exits' steps as
# without DAR. 0.1: the smallest α > 0 of the ablations, and the one of those that keep DAR with
# the largest calibration-split area (RESULTS.md, "DE³ ablations").
DETACHED_ALPHA = 0.1
DE3_RECIPES = {
    "joint": Recipe("de3", lr_of="de3"),  # the protocol's: one stage, α = 1, DAR into the backbone
    "two-stage": Recipe("de3_two_stage", lr_of="deebert", stage_one_of="deebert"),
    "detached": Recipe("de3_detached", lr_of="de3", overrides=(f"loss.alpha={DETACHED_ALPHA}",)),
}


def applicable(task: str, method: str) -> bool:
    """DE³'s prototypes need classes: it has no run on a regression task."""
    return not (method in DE3_METHODS and GLUE_TASKS[task].is_regression)


def epochs(method: str) -> int:
    return 2 * EPOCHS if method in TWO_STAGE else EPOCHS


def seeds_of(task: str, seeds: Sequence[int]) -> tuple[int, ...]:
    """The seeds `task` runs with: `seeds`, plus its `EXTRA_SEEDS` when `seeds` are the default."""
    return (*seeds, *EXTRA_SEEDS.get(task, ())) if tuple(seeds) == SEEDS else tuple(seeds)


def budget(task: str) -> tuple[str, ...]:
    """Every override a run of `task` shares with the other methods' runs."""
    return (*BUDGET, *TASK_BUDGET.get(task, DEFAULT_TASK_BUDGET))


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
    recipe: Recipe | None = None  # `de3-tuned`'s: its experiment (else `experiment=<method>`)

    @property
    def experiment(self) -> str:
        return self.recipe.experiment if self.recipe else self.method

    @property
    def epochs(self) -> int:
        """Its training epochs when it trains every stage itself."""
        return 2 * EPOCHS if self.recipe and self.recipe.stage_one_of else epochs(self.method)

    def overrides(self) -> tuple[str, ...]:
        """Its own overrides: its recipe's experiment, if it has one, and `extra`."""
        return (f"experiment={self.experiment}", *self.extra) if self.recipe else self.extra

    def describe(self) -> str:
        return f"{self.task} {self.method} seed{self.seed} {' '.join(self.overrides())}".strip()


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
        mode = [f"trainer.max_epochs={job.epochs}"]
    command = [
        sys.executable,
        "run.py",
        f"experiment={job.experiment}",
        f"task={job.task}",
        f"seed={job.seed}",
        *budget(job.task),
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


def edr_lambda_rows(folder: Path) -> list[dict]:
    """EDR at every λ of `LAMBDAS`, re-simulated on every split of a de3 run's exit cache (λ
    enters the rule only, so no retraining): `sweep_split` rows with λ in `params`."""
    task = GLUE_TASKS[json.loads((folder / "results.json").read_text())["task"]]
    caches = load_exit_caches(folder / "exit_cache.pt")
    return [row for lam in LAMBDAS for row in sweep_splits(caches, task, {"edr": {"lam": lam}}, flops=None)]


def kept_folder(job: Job, out: Path, kept: Path) -> Path:
    """Where `job`'s text outputs are kept: the same relative folder under `kept` as under `out`."""
    return kept / job.directory.relative_to(out)


def keep_outputs(job: Job, out: Path, kept: Path) -> Path:
    """Copy a finished run's small text outputs to `kept_folder`."""
    destination = kept_folder(job, out, kept)
    destination.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (job.directory / name).is_file():
            shutil.copyfile(job.directory / name, destination / name)
    if job.method in DE3_METHODS and (job.directory / "exit_cache.pt").is_file():
        write_text_atomic(destination / LAMBDA_FILE, csv_text(edr_lambda_rows(job.directory)))
    return destination


def git(*args: str) -> subprocess.CompletedProcess:
    """`git <args>` in the repository, its output captured."""
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)


def commit(path: Path, message: str, attempts: int = 5, wait_s: float = 10.0) -> None:
    """Commit `path` (and nothing else staged) to the repository. Another git command holding
    the index lock only delays it; a commit that still fails is reported and its files stay on
    disk, uncommitted: it never stops the benchmark."""
    for attempt in range(attempts):
        if attempt:
            time.sleep(wait_s)
        result = git("add", str(path))
        if result.returncode:
            continue
        if git("diff", "--cached", "--quiet", "--", str(path)).returncode == 0:
            return  # nothing new
        result = git("commit", "-q", "-m", message, "--", str(path))
        if result.returncode == 0:
            return
    print(f"warning: could not commit {path}: {(result.stderr or result.stdout).strip()}", flush=True)


def tuned() -> dict:
    """`TUNED`'s contents, empty before tuning."""
    return json.loads(TUNED.read_text()) if TUNED.is_file() else {}


def tuned_configs() -> dict[str, str]:
    """method → the configuration frozen for it (`TUNED`), empty before tuning."""
    return tuned().get("picked", {})


def tuned_recipe() -> str | None:
    """The `DE3_RECIPES` name `--tune-de3` picked for `de3-tuned`, None before it ran."""
    return tuned().get("recipes", {}).get(DE3_TUNED, {}).get("picked")


def recipe_job(
    directory: Path,
    task: str,
    seed: int,
    name: str,
    configs: dict[str, str],
    extra: Sequence[str] = (),
    stage_one_in: Path | None = None,
) -> Job:
    """`de3-tuned` trained with recipe `name` of `DE3_RECIPES`, at the learning rate `configs`
    holds for the method the recipe builds on."""
    recipe = DE3_RECIPES[name]
    overrides = (configs.get(recipe.lr_of), *recipe.overrides, *extra)
    return Job(directory, task, DE3_TUNED, seed, tuple(o for o in overrides if o), None, stage_one_in, recipe)


def method_jobs(
    out: Path,
    task: str,
    methods: Sequence[str],
    seed: int,
    configs: dict[str, str],
    folder: str = "",
    *extra: str,
    recipe: str | None = None,
) -> list[Job]:
    """One job per method of `methods` on `task` and `seed` (each with its configuration from
    `configs`; `de3-tuned` with `recipe`), in folders `<out>/<task>/<method><folder>/seed<seed>`.
    A method that trains as another (`TRAINED_AS`, `STAGE_ONE_OF`, a two-stage recipe's
    `stage_one_of`) reuses that one's run when both have the same configuration."""

    def directory(method: str) -> Path:
        return run_dir(out, task, f"{method}{folder}", seed)

    def shared(other: str | None, method: str) -> Path | None:
        same = other in methods and configs.get(other) == configs.get(method)
        return directory(other) if same else None

    def job(method: str) -> Job:
        if method == DE3_TUNED:
            if recipe is None:
                raise SystemExit(f"{DE3_TUNED} has no recipe yet: run with --tune-de3 first")
            of = DE3_RECIPES[recipe]
            return recipe_job(directory(method), task, seed, recipe, configs, extra, shared(of.stage_one_of, of.lr_of))
        return Job(
            directory(method),
            task,
            method,
            seed,
            tuple(c for c in (configs.get(method), *extra) if c),
            trained_in=shared(TRAINED_AS.get(method), method),
            stage_one_in=shared(STAGE_ONE_OF.get(method), method),
        )

    return [job(method) for method in methods if applicable(task, method)]


def tuning_jobs(out: Path, methods: Sequence[str]) -> list[Job]:
    """Every method of `methods` with every configuration of `CONFIGS`, on the tuning task and seed."""
    return [
        job
        for index, config in enumerate(CONFIGS)
        for job in method_jobs(
            out / "tuning" / f"config{index}", TUNING_TASK, methods, TUNING_SEED, dict.fromkeys(methods, config)
        )
    ]


def tuning_run_dir(tuning: Path, method: str, config: str) -> Path:
    """Where `--tune` tries `config` of `CONFIGS` for `method`."""
    return run_dir(tuning / f"config{CONFIGS.index(config)}", TUNING_TASK, method, TUNING_SEED)


def recipe_tuning_dir(tuning: Path, name: str, configs: dict[str, str]) -> Path:
    """Where recipe `name` is tried: for the recipe that trains as the protocol's de3 does, de3's
    own tuning run at its tuned configuration; else `<tuning>/de3-tuned-<name>/<task>/de3-tuned/seed<seed>`."""
    if DE3_RECIPES[name].is_protocol_de3():
        return tuning_run_dir(tuning, "de3", configs["de3"])
    return run_dir(tuning / f"{DE3_TUNED}-{name}", TUNING_TASK, DE3_TUNED, TUNING_SEED)


def de3_tuning_jobs(out: Path, configs: dict[str, str]) -> list[Job]:
    """Every recipe of `DE3_RECIPES` on the tuning task and seed, each at the learning rate tuned
    for the method it builds on (`configs`). The protocol's de3 is its own tuning run (finished
    where `--tune` ran); a two-stage recipe starts from its stage-1 method's tuning run while that
    run's checkpoint is on disk, and otherwise trains that stage 1 itself (the same fine-tuning)."""
    missing = {recipe.lr_of for recipe in DE3_RECIPES.values()} - set(configs)
    if missing:
        raise SystemExit(f"no tuned configuration for {', '.join(sorted(missing))}: run with --tune first")
    tuning = out / "tuning"
    jobs = []
    for name, recipe in DE3_RECIPES.items():
        directory = recipe_tuning_dir(tuning, name, configs)
        if recipe.is_protocol_de3():
            jobs.append(Job(directory, TUNING_TASK, "de3", TUNING_SEED, (configs["de3"],)))
            continue
        stage_one = recipe.stage_one_of
        stage_one_in = tuning_run_dir(tuning, stage_one, configs[stage_one]) if stage_one else None
        jobs.append(recipe_job(directory, TUNING_TASK, TUNING_SEED, name, configs, stage_one_in=stage_one_in))
    return jobs


def seed_major(tasks: Sequence[str], seeds: Sequence[int]) -> list[tuple[int, str]]:
    """(seed, task) pairs, every task of one seed before the next seed, so that a stopped
    benchmark leaves complete seeds behind."""
    return [
        (seed, task)
        for seed in sorted({s for task in tasks for s in seeds_of(task, seeds)})
        for task in tasks
        if seed in seeds_of(task, seeds)
    ]


def main_jobs(out: Path, tasks: Sequence[str], methods: Sequence[str], seeds: Sequence[int]) -> list[Job]:
    """The benchmark's runs, seed-major, then the compute-matched control, seed-major too."""
    configs = tuned_configs()
    recipe = tuned_recipe() if DE3_TUNED in methods else None
    matched = [m for m in MATCHED_METHODS if m in methods]
    return [
        *(
            job
            for seed, task in seed_major(tasks, seeds)
            for job in method_jobs(out, task, methods, seed, configs, recipe=recipe)
        ),
        *(
            job
            for seed, task in seed_major([t for t in MATCHED_TASKS if t in tasks], seeds)
            for job in method_jobs(out, task, matched, seed, configs, MATCHED, f"trainer.max_epochs={2 * EPOCHS}")
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=sorted(GLUE_TASKS))
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=[*METHODS, DE3_TUNED],
        help=f"({DE3_TUNED}: by name only)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="(plus EXTRA_SEEDS by default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the runs' folders go")
    parser.add_argument("--kept", type=Path, default=KEPT_RUNS, help="where their text outputs are copied")
    parser.add_argument("--commit", action="store_true", help="commit each run's kept outputs as it finishes")
    parser.add_argument("--tune", action="store_true", help=f"try CONFIGS on {TUNING_TASK} and write {TUNED.name}")
    parser.add_argument(
        "--tune-de3", action="store_true", help=f"try DE3_RECIPES on {TUNING_TASK}; write the pick to {TUNED.name}"
    )
    parser.add_argument("--untuned", action="store_true", help="run without tuned.json (the configs' defaults)")
    parser.add_argument("--list", action="store_true", help="print the runs and the time they are expected to take")
    args = parser.parse_args()
    if args.tune or args.tune_de3:
        methods = [m for m in args.methods if m != DE3_TUNED]
        jobs = tuning_jobs(args.out, methods) if args.tune else de3_tuning_jobs(args.out, tuned_configs())
        if args.list:
            return list_jobs(jobs, args.out, args.kept)
        run_all(jobs, args.out, args.kept, args.commit)
        if args.tune:
            picked = {**tuned(), **pick_configs(args.kept / "tuning", methods)}
        else:
            picked = {**tuned(), "recipes": {DE3_TUNED: pick_recipe(args.kept / "tuning", tuned_configs())}}
        write_text_atomic(TUNED, json.dumps(picked, indent=2) + "\n")
        print(f"wrote {TUNED}: {picked['picked']}, {DE3_TUNED}: {tuned_recipe()}", flush=True)
        if args.commit:
            commit(TUNED, "glue_tradeoff: configurations chosen on the calibration split")
        return
    if not TUNED.is_file() and not args.untuned:
        raise SystemExit(f"no {TUNED}: run with --tune first (or --untuned to use the configs' defaults)")
    methods = args.methods
    if DE3_TUNED in methods and tuned_recipe() and DE3_RECIPES[tuned_recipe()].is_protocol_de3():
        print(f"{DE3_TUNED} picked the protocol's own de3: its runs are de3's, nothing to train", flush=True)
        methods = [m for m in methods if m != DE3_TUNED]
    jobs = main_jobs(args.out, args.tasks, methods, args.seeds)
    if args.list:
        return list_jobs(jobs, args.out, args.kept)
    run_all(jobs, args.out, args.kept, args.commit)


def calibration_points(folder: Path) -> list[tuple[float, float]]:
    """A tuning run's (speed-up, main metric) sweep points on the split its thresholds are chosen
    on (the calibration split), with its own exit rule."""
    results = json.loads((folder / "results.json").read_text())
    split, rule = next(iter(results["scores"])), results["config"]["exit"]["rule"]
    metric = GLUE_TASKS[TUNING_TASK].main_metric
    with open(folder / "sweep.csv", newline="") as handle:
        return [
            (float(r["speedup"]), float(r[metric]))
            for r in csv.DictReader(handle)
            if r["split"] == split and r["rule"] == rule
        ]


def common_range(runs: Iterable[list[tuple[float, float]]]) -> float:
    """The fastest speed-up every one of `runs` (sweep points) reaches."""
    upto = min(max(s for s, _ in points) for points in runs)
    if upto <= 1.0:
        raise SystemExit(f"some tuning run's rule never exits early on {TUNING_TASK}: no common speed-up range")
    return upto


def criterion(upto: float) -> str:
    return f"area under the calibration split's Pareto frontier of the method's own rule, 1×–{upto:.2f}×"


def pick_configs(tuning: Path, methods: Sequence[str]) -> dict:
    """Per method, the calibration-split frontier area (its own rule, speed-ups 1× to the
    fastest every tuning run reaches) of each configuration tried, and the largest one picked."""
    areas = {m: {c: calibration_points(tuning_run_dir(tuning, m, c)) for c in CONFIGS} for m in methods}
    upto = common_range(points for tried in areas.values() for points in tried.values())
    tried = {m: {c: frontier_area(points, upto) for c, points in by_config.items()} for m, by_config in areas.items()}
    return {
        "task": TUNING_TASK,
        "seed": TUNING_SEED,
        "criterion": criterion(upto),
        "tried": tried,
        "picked": {m: max(by_config, key=by_config.get) for m, by_config in tried.items()},
    }


def pick_recipe(tuning: Path, configs: dict[str, str]) -> dict:
    """DE³'s recipes by the same criterion as `pick_configs`: each recipe's calibration-split
    area (EDR), over the speed-ups every recipe's run and every `--tune` run kept under `tuning`
    reaches (so the range the learning rates were picked on, where those runs are all kept),
    the overrides each recipe ran with, and the largest area picked."""
    points = {name: calibration_points(recipe_tuning_dir(tuning, name, configs)) for name in DE3_RECIPES}
    protocol = [tuning_run_dir(tuning, m, c) for m in METHODS for c in CONFIGS]
    upto = common_range([*points.values(), *(calibration_points(f) for f in protocol if is_finished(f))])
    tried = {name: frontier_area(run, upto) for name, run in points.items()}
    ran = {name: recipe_job(Path(), TUNING_TASK, TUNING_SEED, name, configs) for name in DE3_RECIPES}
    return {
        "criterion": criterion(upto),
        "configurations": {name: " ".join(job.overrides()) for name, job in ran.items()},
        "tried": tried,
        "picked": max(tried, key=tried.get),
    }


def past_wall_times(kept: Path | None) -> dict[tuple[str, str], list[float]]:
    """(task, method folder) → the wall times (s) of the runs kept under `kept` (tuning included)."""
    seconds = defaultdict(list)
    for path in sorted(kept.rglob("results.json")) if kept is not None else ():
        results = json.loads(path.read_text())
        seconds[results["task"], path.parent.parent.name].append(results["wall_time_s"])
    return seconds


def expected_seconds(jobs: Sequence[Job], seconds: dict[tuple[str, str], list[float]]) -> float | None:
    """The expected wall time of `jobs`: each at the mean of the finished runs in its task and
    folder (`de3-matched`, an ablation's `loss.alpha=0`), else of its task and method, else (a
    `de3-tuned` recipe) of its task and the method it trains as long as, else of its folder on
    any task, else of every run; None before any run has finished."""
    everything = [s for times in seconds.values() for s in times]
    if not everything:
        return None

    def expected(job: Job) -> float:
        folder = job.directory.parent.name
        same_folder = [s for (_, f), times in seconds.items() if f == folder for s in times]
        like = seconds.get((job.task, job.recipe.timed_as)) if job.recipe else None  # a recipe's first runs
        past = seconds.get((job.task, folder)) or seconds.get((job.task, job.method)) or like or same_folder
        return statistics.mean(past or everything)

    return sum(map(expected, jobs))


def time_left(jobs: Sequence[Job], seconds: dict[tuple[str, str], list[float]]) -> str:
    """`expected_seconds` as the progress line prints it."""
    expected = expected_seconds(jobs, seconds)
    return "time left unknown until a run finishes" if expected is None else f"about {expected / 3600:.1f} h left"


def pending(jobs: Sequence[Job], out: Path, kept: Path | None) -> list[Job]:
    """The jobs not finished yet, here (`out`) or in their kept copy."""
    return [
        job
        for job in jobs
        if not is_finished(job.directory) and not (kept is not None and is_finished(kept_folder(job, out, kept)))
    ]


def list_jobs(jobs: Sequence[Job], out: Path, kept: Path | None) -> None:
    """Print each job (finished or to run; how it trains) and the time the pending ones are
    expected to take, running nothing."""
    todo = pending(jobs, out, kept)
    for job in jobs:
        how = "finished" if job not in todo else "to run"
        if job in todo and job.stage_one_in is not None:
            how += f", stage 1 from {job.stage_one_in} if its checkpoint is still there"
        print(f"{job.describe()} [{how}] -> {job.directory}", flush=True)
    print(f"{len(jobs) - len(todo)} of {len(jobs)} finished; " + time_left(todo, past_wall_times(kept)), flush=True)


def run_all(jobs: Sequence[Job], out: Path, kept: Path | None = None, commit_each: bool = False) -> None:
    """Run every job not finished yet, with a progress line per run (and the time left, from the
    wall times of the finished runs of the same task and method); keep (and commit) each finished
    run's text outputs; delete each checkpoint once no pending job sweeps it."""
    todo = pending(jobs, out, kept)
    seconds = past_wall_times(kept)
    print(
        f"{len(jobs) - len(todo)} of {len(jobs)} runs already finished; {len(todo)} to go, " + time_left(todo, seconds),
        flush=True,
    )
    failed, spent = [], 0.0
    for index, job in enumerate(todo):
        started = time.perf_counter()
        finished = run_one(job)
        took = time.perf_counter() - started
        spent += took
        if finished:
            seconds[job.task, job.directory.parent.name].append(took)
        pace = f"{index + 1}/{len(todo)} in {spent / 3600:.1f} h; {time_left(todo[index + 1 :], seconds)}"
        if not finished:
            failed.append(job.directory)
            print(f"FAILED: {job.describe()} (see {job.directory / 'job.log'}) [{pace}]", flush=True)
        else:
            print(f"done: {job.describe()} in {took:.0f} s [{pace}]", flush=True)
            if kept is not None:
                copied = keep_outputs(job, out, kept)
                if commit_each:
                    commit(copied, f"glue_tradeoff: {job.describe()}")
        needed = {donor for later in todo[index + 1 :] for donor in (later.trained_in, later.stage_one_in)}
        for directory in {job.directory, job.trained_in, job.stage_one_in} - needed - {None}:
            shutil.rmtree(directory / "checkpoints", ignore_errors=True)
    if failed:
        raise SystemExit(f"{len(failed)} runs failed: " + ", ".join(map(str, failed)))


if __name__ == "__main__":
    main()
