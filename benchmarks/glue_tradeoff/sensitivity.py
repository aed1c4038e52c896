"""DE³'s ablations, one change at a time on one task: DAR off (α = 0: the mapping layers get
no gradient, the prototypes still follow their class means, so DR is computed from an untrained
projection), the mapping layers detached from the backbone, α, τ (DAR temperature), the
prototype dimension d and the EMA rate γ, and the baselines' learning rate (tuning picked a
larger one for DE³). λ needs no training: the report re-simulates it.

python -m benchmarks.glue_tradeoff.sensitivity [--task sst2] [--seeds 42] [--variants loss.alpha=0 ...] [--commit]

Same budget as the main benchmark; each variant changes one value of conf/loss/de3.yaml
(α = 1, τ = 1, d = hidden size, γ = 0.1, mapping layers trained with the backbone: the main
benchmark's de3 runs). The report reads them on the calibration split (where they may be
chosen among) beside dev's calibrated readings. Folders:
`<out>/sensitivity/<task>/<key>=<value>/seed<seed>/`, their text outputs kept under
`runs/sensitivity/` as the main runs' are; finished ones are skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.glue_tradeoff.run import DEFAULT_OUT, KEPT_RUNS, Job, run_all, tuned_configs
from de3.data.tasks import GLUE_TASKS

VARIANTS = {
    "loss.alpha": (0.0, 0.1, 0.3, 3.0),
    "model.prototypes.detach_backbone": (True,),
    "loss.tau": (0.3, 3.0),
    "model.prototypes.dim": (64, 128),
    "model.prototypes.gamma": (0.01, 0.5),
    "model.optimizer.lr": (1e-4,),
}


def override(key: str, value: float | bool) -> str:
    """`key=value` as Hydra reads it (booleans lower-case, numbers in their shortest form)."""
    return f"{key}={str(value).lower() if isinstance(value, bool) else format(value, 'g')}"


def variant_dir(out: Path, task: str, key: str, value: float | bool, seed: int) -> Path:
    return out / "sensitivity" / task / override(key, value) / f"seed{seed}"


def chosen_variants(names: list[str] | None) -> list[tuple[str, float | bool]]:
    """The (key, value) pairs of `VARIANTS` named by `names` (as `override` writes them), or all."""
    every = [(key, value) for key, values in VARIANTS.items() for value in values]
    if names is None:
        return every
    unknown = set(names) - {override(key, value) for key, value in every}
    if unknown:
        known = ", ".join(override(key, value) for key, value in every)
        raise SystemExit(f"unknown variant(s) {', '.join(sorted(unknown))}; the variants are: {known}")
    return [(key, value) for key, value in every if override(key, value) in names]


def variant_jobs(
    out: Path, task: str, seeds: list[int], variants: list[tuple[str, float | bool]], tuned: list[str]
) -> list[Job]:
    """One de3 run per seed and variant: the main runs' `tuned` overrides with the variant's
    value in place of the tuned one when both set the same key."""
    return [
        Job(
            variant_dir(out, task, key, value, seed),
            task,
            "de3",
            seed,
            (*(c for c in tuned if not c.startswith(f"{key}=")), override(key, value)),
        )
        for seed in seeds
        for key, value in variants
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2", choices=[t for t, s in GLUE_TASKS.items() if not s.is_regression])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--variants", nargs="+", help="run only these (e.g. loss.alpha=0); default: all")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--kept", type=Path, default=KEPT_RUNS, help="where their text outputs are copied")
    parser.add_argument("--commit", action="store_true", help="commit each run's kept outputs as it finishes")
    args = parser.parse_args()
    tuned = [c for c in [tuned_configs().get("de3")] if c]  # the main de3 runs' configuration
    run_all(
        variant_jobs(args.out, args.task, args.seeds, chosen_variants(args.variants), tuned),
        args.out,
        args.kept,
        args.commit,
    )


if __name__ == "__main__":
    main()
