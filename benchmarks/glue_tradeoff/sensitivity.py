"""DE³'s training hyperparameters one at a time on one task: α (DAR weight), τ (DAR
temperature), γ (prototype EMA rate). λ needs no training: the report re-simulates it.

python -m benchmarks.glue_tradeoff.sensitivity [--task sst2] [--seeds 42]

Same budget as the main benchmark; each variant changes one value from conf/loss/de3.yaml
(α = 1, τ = 1, γ = 0.1, whose runs are the main benchmark's de3 runs). Folders:
`<out>/sensitivity/<task>/<key>=<value>/seed<seed>/`, their text outputs kept under
`runs/sensitivity/` as the main runs' are; finished ones are skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.glue_tradeoff.run import DEFAULT_OUT, KEPT_RUNS, Job, run_all, tuned_configs
from de3.data.tasks import GLUE_TASKS

VARIANTS = {
    "loss.alpha": (0.1, 0.3, 3.0),
    "loss.tau": (0.3, 3.0),
    "model.prototypes.gamma": (0.01, 0.5),
}


def variant_dir(out: Path, task: str, key: str, value: float, seed: int) -> Path:
    return out / "sensitivity" / task / f"{key}={value:g}" / f"seed{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2", choices=[t for t, s in GLUE_TASKS.items() if not s.is_regression])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--kept", type=Path, default=KEPT_RUNS, help="where their text outputs are copied")
    args = parser.parse_args()
    tuned = tuple(c for c in [tuned_configs().get("de3")] if c)  # the main de3 runs' configuration
    run_all(
        [
            Job(
                variant_dir(args.out, args.task, key, value, seed), args.task, "de3", seed, (*tuned, f"{key}={value:g}")
            )
            for seed in args.seeds
            for key, values in VARIANTS.items()
            for value in values
        ],
        args.out,
        args.kept,
    )


if __name__ == "__main__":
    main()
