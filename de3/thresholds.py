"""`thresholds.json`: what a run's sweep leaves for deployment, and how a predictor reads it.

Per rule, the parameters the sweep used, the threshold that reached each target speed-up and
the whole curve (every swept threshold with the speed-up it reached), with what they were
computed on: the checkpoint (path relative to the run folder and SHA-256 of its content), the
split, the input length and the rows (`data.eval_limit` and the seed of that subset). A
threshold means its speed-up only with these, so `resolve_exit_setting` hands them on together
and refuses a checkpoint that is not the recorded one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from de3.errors import De3Error
from de3.models.exit_rules import ExitRule, get_rule, validate_params, validate_threshold
from de3.sweep import reaching

log = logging.getLogger(__name__)
FILENAME = "thresholds.json"

# The values each rule's indicator takes (de3/models/indicators.py); exit means "indicator below
# the threshold", so a threshold below the lower end lets no sample exit. Counting rules (patience)
# exit when the count reaches the threshold: a count of at least 1.
INDICATOR_RANGES: dict[str, tuple[float, float]] = {
    "entropy": (0.0, 1.0),
    "maxprob": (0.0, 1.0),
    "pcee": (0.0, 1.0),
    "dr": (0.0, 1.0),
    "edr": (0.0, 1.0),
    "dge": (0.0, math.inf),
    "patience": (1.0, math.inf),
}


def never_exits(rule: str, num_layers: int) -> float:
    """A threshold no sample passes (every layer runs): more layers of patience than there are,
    or the lowest value the indicator takes (a sample exits below the threshold)."""
    return num_layers + 1 if get_rule(rule).counts else INDICATOR_RANGES[rule][0]


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# How far below its range an indicator computed without clamping (DGE's divergences, 1 − the
# largest probability) comes by rounding: the sweep takes thresholds from the values themselves.
ROUNDING = 1e-6


def threshold_out_of_range(rule: ExitRule, threshold: float) -> str | None:
    """Why `threshold` cannot be meant for `rule` (None if it can): below the lowest value its
    indicator takes (less rounding), no sample would ever exit."""
    low, high = INDICATOR_RANGES[rule.name]
    if threshold >= low - ROUNDING:
        return None
    if rule.counts:
        return f"rule {rule.name} counts agreeing layers: a threshold is a count ≥ {low:g}"
    return (
        f"rule {rule.name}'s indicator lies in [{low:g}, {high:g}]: below {low:g} no sample ever exits (speed-up 1.00×)"
    )


def thresholds_document(
    rules: Mapping[str, Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    split: str,
    checkpoint: str | Path | None,
    run_dir: str | Path,
    max_seq_length: int | None,
    eval_limit: int | None = None,
    data_seed: int | None = None,
    precision: str = "fp32",
    device: str = "cpu",
) -> dict[str, Any]:
    """The content of `thresholds.json` for `run_dir`, from the sweep summary's rules on `split`
    and the sweep's rows (each rule's curve on `split`).

    `checkpoint` is the file the swept model was loaded from (None: weights never saved);
    its path is recorded relative to `run_dir` when it lies inside it, else absolute.
    `eval_limit` and `data_seed`: the split was the seeded subset `seeded_subset` draws.
    `precision` and `device` (its kind: cpu, cuda): where and how the exit cache was computed.
    """
    recorded = None
    if checkpoint is not None:
        path = Path(checkpoint).resolve()
        run = Path(run_dir).resolve()
        recorded = {
            "path": str(path.relative_to(run)) if path.is_relative_to(run) else str(path),
            "sha256": file_sha256(path),
        }
    return {
        "checkpoint": recorded,
        "split": split,
        "max_seq_length": max_seq_length,
        "eval_limit": eval_limit,
        "data_seed": data_seed,
        "precision": precision,
        "device": device,
        "rules": {
            rule: {
                "params": entry["params"],
                "thresholds": {
                    target: None if point is None else {"threshold": point["threshold"], "speedup": point["speedup"]}
                    for target, point in entry["targets"].items()
                },
                "curve": [[r["threshold"], r["speedup"]] for r in rows if r["split"] == split and r["rule"] == rule],
            }
            for rule, entry in rules.items()
        },
    }


Finite = Annotated[float, Field(allow_inf_nan=False)]
SpeedUp = Annotated[float, Field(ge=1, allow_inf_nan=False)]


class _Point(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: Finite
    speedup: SpeedUp


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any]
    thresholds: dict[str, _Point | None]
    curve: list[tuple[Finite, SpeedUp]] | None = None  # absent in files written before it was recorded


class _Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class _File(BaseModel):
    checkpoint: _Checkpoint | None
    split: str | None = None
    max_seq_length: Annotated[int, Field(ge=1)] | None = None
    eval_limit: Annotated[int, Field(ge=1)] | None = None
    data_seed: int | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # files written before it was recorded: fp32
    device: str | None = None
    rules: dict[str, _Rule]

    @model_validator(mode="after")
    def _subset_has_its_seed(self) -> _File:
        if self.eval_limit is not None and self.data_seed is None:
            raise ValueError("eval_limit is recorded without the data_seed that drew its subset")
        return self


def _check_rule(name: str, entry: _Rule) -> str | None:
    """What is wrong with a rule's entry beyond its shape (None if nothing): the rule, its
    parameters and thresholds below the range of its indicator."""
    try:
        rule = get_rule(name)
        validate_params(rule, entry.params)
    except De3Error as err:
        return f"rules.{name}: {err}"
    points = [(f"thresholds.{t}", p.threshold) for t, p in entry.thresholds.items() if p is not None]
    points += [(f"curve[{i}]", threshold) for i, (threshold, _) in enumerate(entry.curve or [])]
    for where, threshold in points:
        reason = threshold_out_of_range(rule, threshold)
        if reason is not None:
            return f"rules.{name}.{where}: threshold {threshold!r}: {reason}"
    for target in entry.thresholds:
        try:
            float(target)
        except ValueError:
            return f"rules.{name}.thresholds: {target!r} is not a target speed-up"
    return None


@dataclass(frozen=True)
class RunThresholds:
    """A `thresholds.json` read back (its structure checked); `checkpoint` resolved against the
    run folder. `eval_limit`/`data_seed`: the recorded split was that seeded subset."""

    path: Path
    checkpoint: Path | None
    sha256: str | None
    split: str | None
    max_seq_length: int | None
    eval_limit: int | None
    data_seed: int | None
    precision: str
    device: str | None
    rules: dict[str, _Rule]

    @classmethod
    def read(cls, path: str | Path) -> RunThresholds:
        path = Path(path).expanduser()
        if not path.is_file():
            raise De3Error(f"no {FILENAME} at {path}: the sweep of a training run (or mode=sweep) writes it")
        try:
            data = _File.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the file"
            if first["type"] == "json_invalid":
                raise De3Error(f"{path} is not a de3 {FILENAME}: not valid JSON ({first['msg']})") from None
            raise De3Error(f"{path} is not a de3 {FILENAME}: {where}: {first['msg']}") from None
        except UnicodeDecodeError as err:
            raise De3Error(f"{path} is not a de3 {FILENAME}: not UTF-8 ({err.reason})") from None
        for name, entry in data.rules.items():
            problem = _check_rule(name, entry)
            if problem is not None:
                raise De3Error(f"{path} is not a de3 {FILENAME}: {problem}")
        return cls(
            path=path,
            checkpoint=None if data.checkpoint is None else path.parent / data.checkpoint.path,
            sha256=None if data.checkpoint is None else data.checkpoint.sha256,
            split=data.split,
            max_seq_length=data.max_seq_length,
            eval_limit=data.eval_limit,
            data_seed=data.data_seed,
            precision=data.precision,
            device=data.device,
            rules=data.rules,
        )

    def params(self, rule: str) -> dict[str, Any] | None:
        """The parameters the sweep ran `rule` with (None if it did not run it)."""
        entry = self.rules.get(rule)
        return None if entry is None else dict(entry.params)

    def point(self, rule: str, target: float) -> dict[str, float]:
        """{threshold, speedup}: the slowest threshold of `rule` that reached speed-up `target`
        on the recorded split, chosen from the rule's recorded curve as the sweep chose its
        fixed targets (`de3.sweep.reaching`); logged with the speed-up it reached. A file
        without a curve has its recorded targets only."""
        if rule not in self.rules:
            raise De3Error(f"{self.path} has no thresholds for rule {rule!r}; it has {sorted(self.rules)}")
        entry = self.rules[rule]
        if entry.curve is None:
            point = entry.thresholds.get(str(float(target)))
            if point is None:
                known = [t for t, p in entry.thresholds.items() if p is not None]
                raise De3Error(
                    f"{self.path}: rule {rule!r} has no threshold reaching {target}×; targets reached: {known}"
                )
            chosen = point.model_dump()
        else:
            curve = [{"threshold": t, "speedup": s} for t, s in entry.curve]
            chosen = reaching(curve, target)
            if chosen is None:
                fastest = max((s for _, s in entry.curve), default=1.0)
                raise De3Error(
                    f"exit.target_speedup={target}: rule {rule!r} reaches at most {fastest:.4g}× on "
                    f"{self.split} ({self.path}); choose a target up to that"
                )
        log.info(
            "exit.target_speedup=%s: rule %s, threshold %.6g, which reached %.4f× on %s",
            target,
            rule,
            chosen["threshold"],
            chosen["speedup"],
            self.split,
        )
        return chosen

    def recorded_checkpoint(self) -> Path:
        """The checkpoint the thresholds were computed on, which must still exist."""
        if self.checkpoint is None:
            raise De3Error(f"{self.path} records no checkpoint; give ckpt_path=<checkpoint>")
        if not self.checkpoint.is_file():
            raise De3Error(f"{self.path} was computed on {self.checkpoint}, which no longer exists")
        return self.checkpoint

    def check_checkpoint(self, checkpoint: Path) -> None:
        """Refuse a checkpoint whose content is not the one the thresholds were computed on."""
        if self.sha256 is None:
            log.warning(
                "%s records no checkpoint hash: cannot check that %s is the one it was computed on",
                self.path,
                checkpoint,
            )
            return
        if file_sha256(checkpoint) != self.sha256:
            raise De3Error(
                f"{checkpoint} is not the checkpoint the thresholds in {self.path} were computed on "
                f"({self.checkpoint}, sha256 {self.sha256[:12]}…), so their speed-ups do not hold for it: "
                f"use run_dir=<run folder> for that checkpoint, or give exit.threshold"
            )


def recorded_run(
    run_dir: str | Path | None, checkpoint: str | Path | None, required: bool = False
) -> RunThresholds | None:
    """The `thresholds.json` of `run_dir` (which must have one), else the one of the run folder
    `checkpoint` lies in (`<run>/checkpoints/x.ckpt`) where there is one or `required`."""
    if run_dir is not None:
        return RunThresholds.read(Path(run_dir).expanduser() / FILENAME)
    if checkpoint is None:
        return None
    beside = Path(checkpoint).expanduser().resolve().parent.parent / FILENAME
    return RunThresholds.read(beside) if required or beside.is_file() else None


@dataclass(frozen=True)
class ExitSetting:
    """What a predictor runs: the checkpoint, the rule, its threshold and parameters, the input
    length the sweep truncated to (None where no sweep recorded it) and the precision to run in."""

    checkpoint: Path
    rule: str
    threshold: float
    params: dict[str, Any]
    max_seq_length: int | None = None
    precision: str = "fp32"


def resolve_exit_setting(
    rule: str,
    run_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    threshold: float | None = None,
    target_speedup: float | None = None,
    params: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    precision: str | None = None,
) -> ExitSetting:
    """The setting for `rule` from a run folder (its `thresholds.json` and the checkpoint it
    records) or a checkpoint (the `thresholds.json` of its run folder, where there is one).

    The threshold is `threshold`, or the recorded one that reached `target_speedup` — then the
    checkpoint must be the recorded one (same SHA-256). The parameters are those recorded for
    the rule (else `defaults`), with `params` — the user's explicit choices — over them; a
    recorded threshold used with other parameters than its own is logged as such. `precision`
    is the recorded one unless given; a recorded threshold run in another is logged as such too.
    """
    exit_rule = get_rule(rule)
    if (threshold is None) == (target_speedup is None):
        raise De3Error("give exactly one of exit.threshold and exit.target_speedup")
    if run_dir is None and checkpoint is None:
        raise De3Error("give run_dir=<run folder> (or ckpt_path=<checkpoint>)")
    run = recorded_run(run_dir, checkpoint, required=target_speedup is not None)
    path = Path(checkpoint).expanduser() if checkpoint is not None else run.recorded_checkpoint()
    if not path.is_file():
        raise De3Error(f"ckpt_path: no checkpoint file at {path}")

    recorded = None if run is None else run.params(rule)
    chosen = validate_params(
        exit_rule, {**dict((recorded if recorded is not None else defaults) or {}), **(params or {})}
    )
    if target_speedup is not None:
        threshold = _recorded_threshold(run, exit_rule, target_speedup, path, chosen, precision)
    threshold = validate_threshold(exit_rule, threshold)
    reason = threshold_out_of_range(exit_rule, threshold)
    if reason is not None:
        raise De3Error(f"exit.threshold={threshold:g}: {reason}")
    return ExitSetting(
        checkpoint=path,
        rule=rule,
        threshold=threshold,
        params=chosen,
        max_seq_length=None if run is None else run.max_seq_length,
        precision=precision or ("fp32" if run is None else run.precision),
    )


def _recorded_threshold(
    run: RunThresholds,
    exit_rule: ExitRule,
    target_speedup: float,
    checkpoint: Path,
    params: dict[str, Any],
    precision: str | None,
) -> float:
    """The threshold `run` recorded for `target_speedup`, once `checkpoint` is the one it was
    swept on; logged when `params` or `precision` differ from the recorded ones (then it no
    longer means that speed-up)."""
    rule = exit_rule.name
    point = run.point(rule, target_speedup)
    run.check_checkpoint(checkpoint)
    threshold = point["threshold"]
    recorded = run.params(rule)
    if params != validate_params(exit_rule, recorded):
        log.warning(
            "exit.params.%s %s differ from %s recorded in %s: threshold %.6g no longer means the "
            "recorded %.2f× speed-up",
            rule,
            json.dumps(params),
            json.dumps(recorded),
            run.path,
            threshold,
            point["speedup"],
        )
    if precision is not None and precision != run.precision:
        log.warning(
            "the thresholds in %s were chosen on an exit cache computed in %s: run in %s, threshold %.6g "
            "no longer means the recorded %.2f× speed-up (sweep again with exit.precision=%s)",
            run.path,
            run.precision,
            precision,
            threshold,
            point["speedup"],
            precision,
        )
    return threshold
