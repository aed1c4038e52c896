"""The task registry: the only code that knows GLUE (files, columns, labels, metrics, splits).

A task is a `TaskSpec`. The nine GLUE tasks are built in; `task_from_config` turns a `task`
config node into a spec, either by GLUE name or from the fields of a custom dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from de3.data.files import check_encoding
from de3.errors import De3Error

METRIC_NAMES = ("accuracy", "f1", "mcc", "pearson", "spearman")
BAD_ROW_POLICIES = ("skip", "error")
DEFAULT_VALIDATION_FRACTION = 0.1
CALIBRATION = "calibration"


@dataclass(frozen=True)
class TableLayout:
    """Where a task's splits live as files, which columns hold the text and the label, and how
    the rows are read.

    `files` maps a split name to a path (relative to the data directory for GLUE, absolute for
    custom data). `headerless` names the columns of the splits whose files have no header row
    (GLUE's CoLA train/dev). `encoding` is a Python codec or "auto". `literal_quotes`: a TSV's
    quotes are text (GLUE's), not CSV quoting as pandas writes it. `on_bad_rows` says what
    a row with an empty text or label does: "skip" (counted and logged) or "error".
    `held_out` maps splits that have no file to the fraction of the training file they take,
    drawn with `split_seed`, and `held_out_minimum` to the fewest rows a split may have (it
    takes a larger fraction of a small file); `deduplicate` drops repeated and leaked texts
    from train.
    """

    files: Mapping[str, str]
    text_columns: tuple[str, ...]
    label_column: str | None
    headerless: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    encoding: str = "utf-8"
    literal_quotes: bool = False
    on_bad_rows: str = "error"
    held_out: Mapping[str, float] = field(default_factory=dict)
    held_out_minimum: Mapping[str, int] = field(default_factory=dict)
    split_seed: int = 0
    deduplicate: bool = False

    def file_path(self, split: str, data_dir: str | Path | None) -> Path:
        """The file that holds `split` (a relative path hangs off `data_dir`)."""
        path = Path(self.files[split]).expanduser()
        if not path.is_absolute() and data_dir is not None:
            path = Path(data_dir).expanduser() / path
        return path


@dataclass(frozen=True)
class HubSource:
    """The same task on the Hugging Face hub (`datasets.load_dataset(path, name)`)."""

    path: str
    name: str
    text_columns: tuple[str, ...]
    label_column: str = "label"


@dataclass(frozen=True)
class TaskSpec:
    """Everything the data, model and metrics need to know about one task.

    `label_names` is None for regression (one output, MSE). `metrics[0]` is the task's main
    score. `eval_splits` are the labelled splits scored during validation; the first selects
    checkpoints and the deployed thresholds (the held-out `calibration` split when there is
    one). `test_splits` are served unlabelled for prediction.
    """

    name: str
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    local: TableLayout
    eval_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    hub: HubSource | None = None

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_outputs(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    def encode_label(self, value: Any, where: str) -> int | float:
        """Map a raw label (a name, an index, or a number for regression) to the model's target.

        An index is taken only where no label name is a number: with names "1" and "2", a
        label 0 is no class. `where` names the row ("file:line") for the error message.
        """
        if self.label_names is None:
            try:
                return float(value)
            except (TypeError, ValueError):
                raise De3Error(f"{where}: label {value!r} is not a number (task {self.name!r} is regression)") from None
        text = str(value).strip()
        if text in self.label_names:
            return self.label_names.index(text)
        if self._labels_are_indexable and text.isdigit() and int(text) < len(self.label_names):
            return int(text)
        indices = f" (or their indices 0..{len(self.label_names) - 1})" if self._labels_are_indexable else ""
        raise De3Error(
            f"{where}: label {value!r} is outside the label set of task {self.name!r}: "
            f"{list(self.label_names)}{indices}"
        )

    @property
    def _labels_are_indexable(self) -> bool:
        """Whether a label may be given by its index: never where a label name is a number."""
        return not any(_is_number(name) for name in self.label_names)

    def to_dict(self) -> dict[str, Any]:
        """The facts a checkpoint keeps to recognise its task later."""
        return {
            "name": self.name,
            "label_names": None if self.label_names is None else list(self.label_names),
            "metrics": list(self.metrics),
        }


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _glue(
    name: str,
    folder: str,
    text_columns: tuple[str, ...],
    hub_text_columns: tuple[str, ...],
    label_column: str | None,
    label_names: tuple[str, ...] | None,
    metrics: tuple[str, ...],
    eval_splits: tuple[str, ...] = ("validation",),
    test_splits: tuple[str, ...] = ("test",),
    headerless: Mapping[str, tuple[str, ...]] | None = None,
) -> TaskSpec:
    def file_of(split: str) -> str:
        return f"{folder}/{split.replace('validation', 'dev')}.tsv"

    splits = ("train", *eval_splits, *test_splits)
    return TaskSpec(
        name=name,
        label_names=label_names,
        metrics=metrics,
        eval_splits=eval_splits,
        test_splits=test_splits,
        local=TableLayout(
            files={split: file_of(split) for split in splits},
            text_columns=text_columns,
            label_column=label_column,
            headerless=headerless or {},
            literal_quotes=True,
        ),
        hub=HubSource("nyu-mll/glue", name, hub_text_columns),
    )


_COLA_COLUMNS = ("source", "label", "original_label", "sentence")
_PAIR = ("sentence1", "sentence2")

# Label names follow `nyu-mll/glue` so that ids agree between the TSV files and the hub.
GLUE_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _glue(
            "cola",
            "CoLA",
            ("sentence",),
            ("sentence",),
            "label",
            ("unacceptable", "acceptable"),
            ("mcc",),
            headerless={"train": _COLA_COLUMNS, "validation": _COLA_COLUMNS},
        ),
        _glue("sst2", "SST-2", ("sentence",), ("sentence",), "label", ("negative", "positive"), ("accuracy",)),
        _glue(
            "mrpc",
            "MRPC",
            ("#1 String", "#2 String"),
            _PAIR,
            "Quality",
            ("not_equivalent", "equivalent"),
            ("f1", "accuracy"),
        ),
        _glue("stsb", "STS-B", _PAIR, _PAIR, "score", None, ("spearman", "pearson")),
        _glue(
            "qqp",
            "QQP",
            ("question1", "question2"),
            ("question1", "question2"),
            "is_duplicate",
            ("not_duplicate", "duplicate"),
            ("f1", "accuracy"),
        ),
        _glue(
            "mnli",
            "MNLI",
            _PAIR,
            ("premise", "hypothesis"),
            "gold_label",
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            eval_splits=("validation_matched", "validation_mismatched"),
            test_splits=("test_matched", "test_mismatched"),
        ),
        _glue(
            "qnli",
            "QNLI",
            ("question", "sentence"),
            ("question", "sentence"),
            "label",
            ("entailment", "not_entailment"),
            ("accuracy",),
        ),
        _glue("rte", "RTE", _PAIR, _PAIR, "label", ("entailment", "not_entailment"), ("accuracy",)),
        _glue("wnli", "WNLI", _PAIR, _PAIR, "label", ("not_entailment", "entailment"), ("accuracy",)),
    )
}


def _held_out(cfg: Mapping[str, Any], name: str, files: Mapping[str, str]) -> dict[str, float]:
    """The splits cut from the training file: {split: fraction}."""
    held_out = {}
    for split in ("validation", "test"):
        fraction = cfg.get(f"{split}_fraction")
        if fraction is not None and files.get(split):
            raise De3Error(f"task {name!r}: give task.files.{split} or task.{split}_fraction, not both")
        if fraction is None and split == "validation" and not files.get(split):
            fraction = DEFAULT_VALIDATION_FRACTION
        if fraction is not None:
            if not 0 < fraction < 1:
                raise De3Error(f"task {name!r}: task.{split}_fraction must lie between 0 and 1, got {fraction}")
            held_out[split] = float(fraction)
    if sum(held_out.values()) >= 1:
        raise De3Error(f"task {name!r}: the held-out fractions {held_out} leave nothing to train on")
    return held_out


def custom_layout(cfg: Mapping[str, Any]) -> TableLayout:
    """The files, columns and reading rules of a custom task's config node."""
    name = cfg.get("name", "custom")
    given = cfg.get("files") or {}
    if isinstance(given, DictConfig):
        given = OmegaConf.to_container(given, resolve=True)  # a mandatory path left unset reads MISSING ("???")
    files = {
        split: str(Path(path).expanduser().absolute()) for split, path in given.items() if path and path != MISSING
    }
    if not files.get("train"):
        raise De3Error(
            f"task {name!r}: task.files.train is not set: name your labelled CSV, TSV, JSON or JSONL file "
            "(task.files.train=path/to/train.csv)"
        )
    text_columns = tuple(cfg.get("text_columns") or ())
    if not 1 <= len(text_columns) <= 2:
        raise De3Error(f"task {name!r}: task.text_columns must name one or two columns, got {list(text_columns)}")
    on_bad_rows = cfg.get("on_bad_rows", "skip")
    if on_bad_rows not in BAD_ROW_POLICIES:
        raise De3Error(f"task {name!r}: task.on_bad_rows must be one of {list(BAD_ROW_POLICIES)}, got {on_bad_rows!r}")
    return TableLayout(
        files=files,
        text_columns=text_columns,
        label_column=cfg.get("label_column", "label"),
        encoding=check_encoding(cfg.get("encoding") or "utf-8"),
        on_bad_rows=on_bad_rows,
        held_out=_held_out(cfg, name, files),
        split_seed=int(cfg.get("split_seed") or 0),
        deduplicate=bool(cfg.get("deduplicate", False)),
    )


def _custom_task(cfg: Mapping[str, Any]) -> TaskSpec:
    name = cfg.get("name", "custom")
    layout = custom_layout(cfg)
    regression = bool(cfg.get("regression", False))
    label_names = cfg.get("label_names")
    if regression and label_names is not None:
        raise De3Error(f"task {name!r}: set task.label_names (classification) or task.regression=true, not both")
    if not regression and label_names is None:
        raise De3Error(
            f"task {name!r}: no label names yet: de3.data.custom.complete_custom_task reads them from the training file"
        )
    metrics = tuple(cfg.get("metrics") or (("spearman", "pearson") if regression else ("accuracy",)))
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise De3Error(f"task {name!r}: unknown metric(s) {unknown}; choose from {list(METRIC_NAMES)}")
    if not regression and len(label_names) < 2:
        raise De3Error(f"task {name!r}: task.label_names needs at least two classes, got {list(label_names)}")
    splits = [s for s in (*layout.files, *layout.held_out) if s != "train"]
    return TaskSpec(
        name=name,
        label_names=None if regression else tuple(str(n) for n in label_names),
        metrics=metrics,
        eval_splits=tuple(s for s in splits if not s.startswith("test")),
        test_splits=tuple(s for s in splits if s.startswith("test")),
        local=layout,
    )


def with_calibration(spec: TaskSpec, cfg: Mapping[str, Any]) -> TaskSpec:
    """`spec` with a `calibration` split cut from its training file, when
    `cfg.calibration_fraction` is set: it comes first among the eval splits, so checkpoints are
    selected and the deployed thresholds chosen on it, and the other eval splits are scored,
    not chosen on. It takes at least `cfg.calibration_min_examples` rows."""
    fraction = cfg.get("calibration_fraction")
    if fraction is None:
        return spec
    if not 0 < fraction < 1:
        raise De3Error(f"task.calibration_fraction must lie between 0 and 1 (or null for none), got {fraction}")
    minimum = cfg.get("calibration_min_examples")
    minimum = 1 if minimum is None else int(minimum)
    if minimum < 1:
        raise De3Error(f"task.calibration_min_examples must be at least 1, got {minimum}")
    if CALIBRATION in spec.local.files or CALIBRATION in spec.local.held_out:
        raise De3Error(f"task {spec.name!r} already has a {CALIBRATION!r} split: set task.calibration_fraction=null")
    held_out = {CALIBRATION: float(fraction), **spec.local.held_out}
    if sum(held_out.values()) >= 1:
        raise De3Error(f"task {spec.name!r}: the held-out fractions {held_out} leave nothing to train on")
    local = replace(
        spec.local,
        held_out=held_out,
        held_out_minimum={**spec.local.held_out_minimum, CALIBRATION: minimum},
        split_seed=int(cfg.get("split_seed") or 0),
    )
    return replace(spec, local=local, eval_splits=(CALIBRATION, *spec.eval_splits))


def task_from_config(cfg: Mapping[str, Any]) -> TaskSpec:
    """The `TaskSpec` a `task` config node names: a GLUE task, or a custom one if it lists
    files; with a calibration split where the node asks for one (`with_calibration`)."""
    return with_calibration(_task_without_calibration(cfg), cfg)


def _task_without_calibration(cfg: Mapping[str, Any]) -> TaskSpec:
    if cfg.get("files") is not None:
        return _custom_task(cfg)
    name = cfg.get("name")
    if name not in GLUE_TASKS:
        raise De3Error(
            f"unknown task {name!r}: GLUE tasks are {sorted(GLUE_TASKS)}; "
            "for your own data use task=custom and set task.files"
        )
    spec = GLUE_TASKS[name]
    on_bad_rows = cfg.get("on_bad_rows")
    if on_bad_rows is not None:  # `+task.on_bad_rows=skip` on the command line
        if on_bad_rows not in BAD_ROW_POLICIES:
            raise De3Error(f"task.on_bad_rows must be one of {list(BAD_ROW_POLICIES)}, got {on_bad_rows!r}")
        spec = replace(spec, local=replace(spec.local, on_bad_rows=on_bad_rows))
    return spec
