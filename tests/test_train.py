"""End to end: the real config composed and shrunk, `train`, and `run.py` as users call it."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from de3.jobs import train
from de3.models.module import MultiExitModule
from tests.conftest import REPO, compose_config, run_cli


@pytest.mark.parametrize("task", ["rte", "stsb", "mnli", "cola"])
def test_train_writes_per_exit_results(tiny_config, task, tmp_path):
    cfg = tiny_config(f"task={task}")
    score = train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    splits = results["scores"]
    assert list(splits) == (["validation_matched", "validation_mismatched"] if task == "mnli" else ["validation"])
    for metrics in splits.values():
        for values in metrics.values():
            assert len(values) == 2  # tiny_bert has two exits
    first = next(iter(splits.values()))
    assert score == pytest.approx(first[next(iter(first))][-1])
    assert (tmp_path / "results.md").read_text().startswith("### ")
    assert Path(results["checkpoint"]).is_file()
    assert results["config"]["task"]["name"] == task and results["config"]["seed"] == cfg.seed
    assert results["git_commit"] is None or len(results["git_commit"].split("-")[0]) == 40


def test_checkpoint_reloads_the_same_model(tiny_config, tmp_path):
    cfg = tiny_config("task=sst2", "backbone=tiny_roberta")
    train(cfg)
    checkpoint = json.loads((tmp_path / "results.json").read_text())["checkpoint"]
    reloaded = MultiExitModule.load_from_checkpoint(checkpoint).eval()  # weights_only load must work
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, state[name])
    batch = reloaded.tokenizer(["hello"], return_tensors="pt")
    assert reloaded(batch).logits.shape == (2, 1, 2)


def test_every_backbone_and_task_config_composes(tiny_config, tmp_path):
    for backbone in (REPO / "conf" / "backbone").glob("*.yaml"):
        cfg = tiny_config(f"backbone={backbone.stem}")
        assert cfg.model.exits.pooling in ("cls", "mean")
    for task in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"):
        assert tiny_config(f"task={task}").task.name == task
    cfg = compose_config(["trainer=ddp", "experiment=quickstart"], tmp_path)
    assert cfg.trainer.strategy == "ddp" and cfg.data.train_limit == 4000 and cfg.backbone.name == "minilm"
    assert cfg.logger.wandb.offline is True
    assert instantiate(cfg.loss).weighting == "ascending"


def test_multirun_gives_one_output_dir_per_job(tmp_path, glue_dir):
    result = run_cli(
        "-m",
        "task=rte,mrpc",
        "backbone=tiny_bert",
        "trainer.max_steps=2",
        "data.train_limit=16",
        "callbacks.progress_bar=null",
        cwd=tmp_path,
        glue_dir=glue_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.parent for p in tmp_path.glob("multiruns/*/*/results.json"))
    assert [p.name for p in jobs] == ["0_joint-rte-tiny_bert-seed42", "1_joint-mrpc-tiny_bert-seed42"]
    groups = set()
    for job in jobs:  # W&B (offline, the default logger) wrote one run per job
        runs = list(job.glob("wandb/offline-run-*"))
        assert len(runs) == 1
        wandb_cfg = json.loads((job / "results.json").read_text())["config"]["logger"]["wandb"]
        groups.add(wandb_cfg["group"])
        task = job.name.split("_", 1)[1].split("-")[1]
        name = wandb_cfg["name"]  # the job's overrides in its name
        assert name.startswith(f"joint-{task}-tiny_bert-seed42 [") and f"task={task}," in name
    assert groups == {f"multirun-{jobs[0].parent.name}"}  # one group for the whole multirun
    sync = subprocess.run(
        ["wandb", "sync", "--dry-run", *(str(next(job.glob("wandb/offline-run-*"))) for job in jobs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Would sync 2 run(s)" in sync.stdout + sync.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["task=rte", "data.data_dir=/nonexistent/glue", "data.source=local"],
            "task 'rte', split 'train': file not found: /nonexistent/glue/RTE/train.tsv",
        ),
        (
            ["backbone=minilm", "backbone.path=/nonexistent/minilm"],
            "backbone 'minilm': no local directory at /nonexistent/minilm",
        ),
    ],
)
def test_bad_input_stops_with_one_clear_message(tmp_path, glue_dir, overrides, message):
    result = run_cli("backbone=tiny_bert", "logger=csv", *overrides, cwd=tmp_path, glue_dir=glue_dir)
    assert result.returncode == 2
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("runs/*/*/results.json"))


def test_unknown_task_lists_the_choices(tmp_path, glue_dir):
    result = run_cli("task=imdb", cwd=tmp_path, glue_dir=glue_dir)
    assert result.returncode != 0
    assert "Could not find 'task/imdb'" in result.stderr and "rte" in result.stderr


def test_bf16_mixed_scores_checkpoint_choice_and_sweep_in_one_precision(tiny_config, tmp_path, monkeypatch):
    import de3.models.module as module_file
    from de3.data.tasks import task_from_config
    from de3.exit_cache import load_exit_caches
    from de3.metrics import predictions
    from de3.sweep import score

    scored_dtypes = set()

    def recording(logits, regression):
        scored_dtypes.add(logits.dtype)
        return predictions(logits, regression)

    monkeypatch.setattr(module_file, "predictions", recording)
    cfg = tiny_config("task=rte", "trainer.precision=bf16-mixed", "backbone.config_overrides.num_hidden_layers=3")
    train(cfg)
    assert scored_dtypes == {torch.float32}  # validation (val_score, checkpoint choice) ran outside autocast
    results = json.loads((tmp_path / "results.json").read_text())
    cache = load_exit_caches(tmp_path / "exit_cache.pt")["validation"]
    task = task_from_config(cfg.task)
    from_cache = [score(task, predictions(cache.logits[m], False), cache.labels)["accuracy"] for m in range(3)]
    assert results["scores"]["validation"]["accuracy"] == from_cache  # results.json agrees with the sweep's pass
