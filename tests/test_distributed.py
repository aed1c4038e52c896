"""Beyond one process: DDP with 2 CPU processes (gloo), and Hydra launchers."""

import json
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli

TINY_DE3 = (
    "task=rte",
    "backbone=tiny_bert",
    "loss=de3",
    "backbone.config_overrides.num_hidden_layers=3",
    "data.batch_size=4",
    "trainer.max_epochs=2",
    "trainer.num_sanity_val_steps=0",
    "logger=csv",
    "callbacks.progress_bar=null",
)


def test_ddp_keeps_prototypes_in_sync_and_sweeps_like_one_process(tmp_path, glue_dir):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    probe = ["+callbacks.probe._target_=tests.probes.SavePrototypesPerRank", f"+callbacks.probe.output_dir={ddp_dir}"]
    result = run_cli(
        *TINY_DE3,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *probe,
        f"hydra.run.dir={ddp_dir}",
        cwd=tmp_path,
        glue_dir=glue_dir,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    ranks = [torch.load(ddp_dir / f"prototypes_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["initialized"].all()
    assert torch.equal(ranks[0]["prototypes"], ranks[1]["prototypes"])  # synced, bit for bit
    assert (result.stdout + result.stderr).count("sweep: ") == 1  # rank 0 only

    ddp_results = json.loads((ddp_dir / "results.json").read_text())
    again = run_cli(
        "mode=sweep",
        f"ckpt_path={ddp_results['checkpoint']}",
        "logger=csv",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={single_dir}",
        cwd=tmp_path,
        glue_dir=glue_dir,
        env={"OMP_NUM_THREADS": "1"},  # Lightning gives each of the 2 DDP processes 1 of the 2 cores
    )
    assert again.returncode == 0, again.stdout[-3000:]
    assert (single_dir / "sweep.csv").read_text() == (ddp_dir / "sweep.csv").read_text()
    single_results = json.loads((single_dir / "results.json").read_text())
    assert single_results["scores"] == ddp_results["scores"]  # no padded duplicates in DDP evaluation


def fake_slurm(bin_dir: Path, captured: Path) -> None:
    """`sbatch` that keeps the script it is given, `sacct` that reports every job failed, `srun`."""
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'cp "$1" {captured}\necho "Submitted batch job 4242"',
        "sacct": 'echo "JobID|State|NodeList"\necho "4242_0|FAILED|node1"\necho "4242_1|FAILED|node1"',
        "srun": "exit 0",
        "scancel": "exit 0",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)


def test_slurm_launcher_submits_the_readme_job(tmp_path, glue_dir):
    """The README's cluster command, against a fake SLURM: the batch script it submits."""
    script = tmp_path / "submitted.sh"
    fake_slurm(tmp_path / "bin", script)
    run_cli(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.account=nlp",
        "trainer=ddp",
        "trainer.accelerator=gpu",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "experiment=de3",
        "task=rte,mrpc",
        "ckpt_path=last",
        cwd=tmp_path,
        glue_dir=glue_dir,
        env={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"},
    )
    lines = set(script.read_text().splitlines())
    expected = {"--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--account=nlp"}
    assert {f"#SBATCH {option}" for option in expected} <= lines
    assert "#SBATCH --array=0-1%2" in lines  # one array task per multirun job
    assert any(line.startswith("#SBATCH --time=") for line in lines)


@pytest.mark.parametrize("launcher", ["local"])
def test_submitit_local_launcher_runs_a_two_job_multirun(tmp_path, glue_dir, launcher):
    result = run_cli(
        "-m",
        f"hydra/launcher={launcher}",
        "task=rte,mrpc",
        "backbone=tiny_bert",
        "logger=csv",
        "trainer.max_steps=2",
        "callbacks.progress_bar=null",
        cwd=tmp_path,
        glue_dir=glue_dir,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = sorted(p.parent.name for p in Path(tmp_path).glob("multiruns/*/*/results.json"))
    assert jobs == ["0_joint-rte-tiny_bert-seed42", "1_joint-mrpc-tiny_bert-seed42"]


def test_ddp_runs_a_two_stage_scheme(tmp_path, glue_dir):
    # stage 1 freezes the internal exits, stage 2 the backbone: DDP is told to expect unused parameters
    result = run_cli(
        *(o for o in TINY_DE3 if o != "loss=de3"),
        "experiment=deebert",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        cwd=tmp_path,
        glue_dir=glue_dir,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "training stage 2 of 2" in result.stdout
