"""Through faults: exact resume after SIGKILL, determinism, NaN loss, failed writes, bad input."""

import json
import re
from pathlib import Path

import pytest
import torch

import de3.utils.io
from de3.errors import De3Error
from de3.jobs import train
from tests.conftest import compose_config, run_cli

# The fake RTE's 24 training pairs in batches of 4: 6 steps per epoch, 4 epochs.
TINY_RUN = (
    "task=rte",
    "backbone=tiny_bert",
    "data.batch_size=4",
    "trainer.max_epochs=4",
    "trainer.num_sanity_val_steps=0",
    "callbacks.progress_bar=null",
)


def wandb_run_ids(run_dir: Path) -> list[str]:
    return sorted(p.name.rsplit("-", 1)[1] for p in run_dir.glob("wandb/offline-run-*"))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_sigkilled_run_resumes_to_the_same_result(tmp_path, glue_dir):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli(*TINY_RUN, f"hydra.run.dir={whole}", cwd=tmp_path, glue_dir=glue_dir).returncode == 0

    kill = ["+callbacks.kill._target_=tests.probes.KillAtStep", "+callbacks.kill.step=9"]  # mid epoch 2
    died = run_cli(*TINY_RUN, *kill, f"hydra.run.dir={killed}", cwd=tmp_path, glue_dir=glue_dir)
    assert died.returncode == -9
    assert (killed / "checkpoints" / "last.ckpt").is_file() and not (killed / "results.json").exists()

    resumed = run_cli(*TINY_RUN, f"hydra.run.dir={killed}", "ckpt_path=last", cwd=tmp_path, glue_dir=glue_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "continuing W&B run" in resumed.stdout
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, killed))
    assert a["global_step"] == b["global_step"] == 24
    for split, metrics in a["scores"].items():
        for name, values in metrics.items():
            assert b["scores"][split][name] == pytest.approx(values, abs=1e-6)
    weights_a, weights_b = final_weights(whole), final_weights(killed)
    for name, tensor in weights_a.items():
        torch.testing.assert_close(weights_b[name], tensor, rtol=1e-5, atol=1e-6)
    ids = wandb_run_ids(killed)  # the killed run and its resumption: one W&B run id, twice
    assert len(ids) == 2 and ids[0] == ids[1]


def test_resume_last_without_checkpoint_starts_fresh_and_bad_path_is_an_error(tmp_path, glue_dir):
    fresh = run_cli(*TINY_RUN, "logger=csv", "trainer.max_epochs=1", "ckpt_path=last", cwd=tmp_path, glue_dir=glue_dir)
    assert fresh.returncode == 0 and "training from the start" in fresh.stdout
    missing = run_cli(*TINY_RUN, "logger=csv", "ckpt_path=/nowhere/x.ckpt", cwd=tmp_path, glue_dir=glue_dir)
    assert missing.returncode == 2 and "ckpt_path: no checkpoint file at /nowhere/x.ckpt" in missing.stdout


def test_same_seed_same_metrics(tiny_config, tmp_path):
    first = tiny_config("task=mrpc", "trainer.max_steps=-1", "trainer.max_epochs=2")
    train(first)
    second_dir = tmp_path / "again"
    train(compose_config(list(first.hydra.overrides.task), second_dir))
    scores = [json.loads((d / "results.json").read_text())["scores"] for d in (tmp_path, second_dir)]
    assert scores[0] == scores[1]  # identical, not merely close


def test_nan_loss_names_the_step_and_last_good_checkpoint(tmp_path, glue_dir):
    poison = ["+callbacks.poison._target_=tests.probes.PoisonWeightsAtStep", "+callbacks.poison.step=8"]
    result = run_cli(
        *TINY_RUN, "logger=csv", *poison, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, glue_dir=glue_dir
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    match = re.search(r"the loss is nan at step 8 \(epoch 1, batch 2\)\. Last good checkpoint: (\S+)", result.stdout)
    assert match, result.stdout[-2000:]
    assert Path(match.group(1)).is_file() and Path(match.group(1)).parent.name == "checkpoints"


def test_failed_write_leaves_no_partial_sweep_file(tiny_config, tmp_path, monkeypatch):
    (tmp_path / "sweep.csv").write_text("the previous, complete sweep\n")
    real_replace = de3.utils.io.os.replace

    def disk_full_for_sweep_csv(src, dst):
        if Path(dst).name == "sweep.csv":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(de3.utils.io.os, "replace", disk_full_for_sweep_csv)
    with pytest.raises(De3Error, match="could not write the sweep's files to .*No space left on device"):
        train(tiny_config("task=rte"))
    assert (tmp_path / "sweep.csv").read_text() == "the previous, complete sweep\n"
    assert not list(tmp_path.glob(".sweep.csv.*"))  # no temporary left behind


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.max_epoch=3"], "Could not override 'trainer.max_epoch'"),
        (["no_such_option=1"], "Could not override 'no_such_option'"),
        (["data.train_limit=0"], "data.train_limit=0 would leave no examples"),
        (["exit.rule=fastest"], "unknown exit rule 'fastest'"),
    ],
)
def test_bad_options_stop_with_one_clear_message(tmp_path, glue_dir, overrides, message):
    result = run_cli("backbone=tiny_bert", "logger=csv", *overrides, cwd=tmp_path, glue_dir=glue_dir)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
