"""DE³'s ablations, one change at a time on one task: DAR off (α = 0: the mapping layers get
no gradient, the prototypes still follow their class means, so DR is computed from an untrained
projection), the mapping layers detached from the backbone, α, τ (DAR temperature), the
prototype dimension d and the EMA rate γ. λ needs no training: the report re-simulates it.

python -m benchmarks.glue_tradeoff.sensitivity [--task sst2] [--seeds 42] [--commit]

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
}


def override(key: str, value: float | bool) -> str:
    """`key=value` as Hydra reads it (booleans lower-case, numbers in their shortest form)."""
    return f"{key}={str(value).lower() if isinstance(value, bool) else format(value, 'g')}"


def variant_dir(out: Path, task: str, key: str, value: float | bool, seed: int) -> Path:
    return out / "sensitivity" / task / override(key, value) / f"seed{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2", choices=[t for t, s in GLUE_TASKS.items() if not s.is_regression])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--kept", type=Path, default=KEPT_RUNS, help="where their text outputs are copied")
    parser.add_argument("--commit", action="store_true", help="commit each run's kept outputs as it finishes")
    args = parser.parse_args()
    tuned = tuple(c for c in [tuned_configs().get("de3")] if c)  # the main de3 runs' configuration
    run_all(
        [
            Job(
                variant_dir(args.out, args.task, key, value, seed),
                args.task,
                "de3",
                seed,
                (*tuned, override(key, value)),
            )
            for seed in args.seeds
            for key, values in VARIANTS.items()
            for value in values
        ],
        args.out,
        args.kept,
        args.commit,
    )


if __name__ == "__main__":
    main()
