"""`thresholds.json`: what a run's sweep leaves for deployment, and how a predictor reads it.

Per rule, the parameters the sweep used and the threshold that reached each target speed-up,
with what they were computed on: the checkpoint (path relative to the run folder and SHA-256
of its content), the split and the input length. A threshold means its speed-up only with
these, so `resolve_exit_setting` hands them on together and refuses a checkpoint that is not
the recorded one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from de3.errors import De3Error
from de3.models.exit_rules import get_rule, validate_params, validate_threshold

log = logging.getLogger(__name__)
FILENAME = "thresholds.json"


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def thresholds_document(
    rules: Mapping[str, Mapping[str, Any]],
    split: str,
    checkpoint: str | Path | None,
    run_dir: str | Path,
    max_seq_length: int | None,
) -> dict[str, Any]:
    """The content of `thresholds.json` for `run_dir`, from the sweep summary's rules on `split`.

    `checkpoint` is the file the swept model was loaded from (None: weights never saved);
    its path is recorded relative to `run_dir` when it lies inside it, else absolute.
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
        "rules": {
            rule: {
                "params": entry["params"],
                "thresholds": {
                    target: None if point is None else {"threshold": point["threshold"], "speedup": point["speedup"]}
                    for target, point in entry["targets"].items()
                },
            }
            for rule, entry in rules.items()
        },
    }


@dataclass(frozen=True)
class RunThresholds:
    """A `thresholds.json` read back; `checkpoint` resolved against the run folder."""

    path: Path
    checkpoint: Path | None
    sha256: str | None
    split: str | None
    max_seq_length: int | None
    rules: dict[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> RunThresholds:
        path = Path(path).expanduser()
        if not path.is_file():
            raise De3Error(f"no {FILENAME} at {path}: the sweep of a training run (or mode=sweep) writes it")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            recorded = data.get("checkpoint") or {}
            return cls(
                path=path,
                checkpoint=path.parent / recorded["path"] if recorded else None,
                sha256=recorded.get("sha256"),
                split=data.get("split"),
                max_seq_length=data.get("max_seq_length"),
                rules=dict(data["rules"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise De3Error(f"{path} is not a de3 {FILENAME} ({type(err).__name__}: {err})") from None

    def params(self, rule: str) -> dict[str, Any] | None:
        """The parameters the sweep ran `rule` with (None if it did not run it)."""
        entry = self.rules.get(rule)
        return None if entry is None else dict(entry["params"])

    def point(self, rule: str, target: float) -> dict[str, float]:
        """{threshold, speedup}: the slowest threshold of `rule` that reached speed-up `target`."""
        if rule not in self.rules:
            raise De3Error(f"{self.path} has no thresholds for rule {rule!r}; it has {sorted(self.rules)}")
        thresholds = self.rules[rule]["thresholds"]
        point = thresholds.get(str(float(target)))
        if point is None:
            known = [t for t, p in thresholds.items() if p is not None]
            raise De3Error(f"{self.path}: rule {rule!r} has no threshold reaching {target}×; targets reached: {known}")
        return point

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


@dataclass(frozen=True)
class ExitSetting:
    """What a predictor runs: the checkpoint, the rule, its threshold and parameters, and the
    input length the sweep truncated to (None where no sweep recorded it)."""

    checkpoint: Path
    rule: str
    threshold: float
    params: dict[str, Any]
    max_seq_length: int | None = None


def resolve_exit_setting(
    rule: str,
    run_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    threshold: float | None = None,
    target_speedup: float | None = None,
    params: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> ExitSetting:
    """The setting for `rule` from a run folder (its `thresholds.json` and the checkpoint it
    records) or a checkpoint (the `thresholds.json` of its run folder, where there is one).

    The threshold is `threshold`, or the recorded one that reached `target_speedup` — then the
    checkpoint must be the recorded one (same SHA-256). The parameters are those recorded for
    the rule (else `defaults`), with `params` — the user's explicit choices — over them; a
    recorded threshold used with other parameters than its own is logged as such.
    """
    exit_rule = get_rule(rule)
    if (threshold is None) == (target_speedup is None):
        raise De3Error("give exactly one of exit.threshold and exit.target_speedup")
    if run_dir is None and checkpoint is None:
        raise De3Error("give run_dir=<run folder> (or ckpt_path=<checkpoint>)")
    if run_dir is not None:
        run: RunThresholds | None = RunThresholds.read(Path(run_dir).expanduser() / FILENAME)
    else:
        beside = Path(checkpoint).expanduser().resolve().parent.parent / FILENAME
        run = RunThresholds.read(beside) if target_speedup is not None or beside.is_file() else None
    path = Path(checkpoint).expanduser() if checkpoint is not None else run.recorded_checkpoint()
    if not path.is_file():
        raise De3Error(f"ckpt_path: no checkpoint file at {path}")

    recorded = None if run is None else run.params(rule)
    chosen = validate_params(
        exit_rule, {**dict((recorded if recorded is not None else defaults) or {}), **(params or {})}
    )
    if target_speedup is not None:
        point = run.point(rule, target_speedup)
        run.check_checkpoint(path)
        threshold = point["threshold"]
        if chosen != validate_params(exit_rule, recorded):
            log.warning(
                "exit.params.%s %s differ from %s recorded in %s: threshold %.6g no longer means the "
                "recorded %.2f× speed-up",
                rule,
                json.dumps(chosen),
                json.dumps(recorded),
                run.path,
                threshold,
                point["speedup"],
            )
    return ExitSetting(
        checkpoint=path,
        rule=rule,
        threshold=validate_threshold(exit_rule, threshold),
        params=chosen,
        max_seq_length=None if run is None else run.max_seq_length,
    )
