"""The cluster path: the Snakemake rules' cluster requests, a failed train job, and a train job on
a real SLURM cluster (the one-node cluster of workflow/slurm/local-cluster.sh, through
workflow/profiles/slurm-local).

The cluster test skips when no such cluster is running, but FAILS under CI=1 (SLURM not installed
or not started), so that CI cannot pass it silently, as tests/test_report_browser.py does for
chromium: `.ci/run` starts the cluster with `workflow/slurm/local-cluster.sh start`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import generator_tensors, make_project, read_losses, tiny_raw_params, write_params
from sagan import paths
from smoke import orchestrator_env
from scenarios import slurm_cluster_running

pytestmark = pytest.mark.integration  # Snakemake and torchrun subprocesses

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO_ROOT / "workflow/slurm/local-cluster.sh"
SLURM_PROFILE = REPO_ROOT / "workflow/profiles/slurm"
LOCAL_PROFILE = REPO_ROOT / "workflow/profiles/slurm-local"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def train_project(root: Path, raw: dict) -> Path:
    """A project in which the train rule alone can run: make_project's shards and split, the
    sources the rule depends on, and an FID reference that train.eval_every: 0 never reads."""
    make_project(root)
    (root / "src").symlink_to(REPO_ROOT / "src")
    (root / paths.FID_REFERENCE).parent.mkdir(parents=True, exist_ok=True)
    (root / paths.FID_REFERENCE).write_bytes(b"")
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


def snakemake(root: Path, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The repository's Snakefile on the project `root`, allowed to run its train rule only (the
    project's data and reference have no producing job)."""
    cmd = [SNAKEMAKE, "-s", str(REPO_ROOT / "Snakefile"), "-d", str(root), "--allowed-rules", "train", *args]
    return subprocess.run(cmd, cwd=root, env=env or orchestrator_env(), capture_output=True, text=True,
                          timeout=timeout)


def params_project(root: Path, **sections: dict) -> Path:
    """A project with a params file (write_params: the paper's, `sections` changed) and the
    sources that the rules' code deps name, enough for a dry run."""
    write_params(root / "params.yaml", **sections)
    if not (root / "src").exists():
        (root / "src").symlink_to(REPO_ROOT / "src")
    return root


def dry_run_resources(root: Path, *args: str) -> dict[str, str]:
    """{rule: its `resources:` line} of a dry run."""
    done = subprocess.run([SNAKEMAKE, "-n", "-s", str(REPO_ROOT / "Snakefile"), "-d", str(root), *args],
                          cwd=root, env=orchestrator_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", done.stdout + done.stderr, re.M))


# -- the rules' cluster requests ----------------------------------------------------------------
@pytest.fixture
def profile_copy(tmp_path) -> Path:
    """workflow/profiles/slurm with its placeholders filled in, as a user would."""
    profile = tmp_path / "profile"
    profile.mkdir()
    text = (SLURM_PROFILE / "config.yaml").read_text()
    text = text.replace('"your-account"', '"lab"').replace('"your-cpu-partition"', '"short"')
    (profile / "config.yaml").write_text(text.replace('"your-gpu-partition"', '"a100"'))
    return profile


def test_the_slurm_profile_stops_with_one_line_while_it_has_placeholders(tmp_path):
    params_project(tmp_path)
    done = subprocess.run([SNAKEMAKE, "-n", "--profile", str(SLURM_PROFILE), "-s", str(REPO_ROOT / "Snakefile"),
                           "-d", str(tmp_path)], cwd=tmp_path, env=orchestrator_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "snakemake: error: the cluster profile still has the placeholder slurm_account=your-account; set your "
        "account, partitions and GPU gres in workflow/profiles/slurm/config.yaml "
        "(workflow/profiles/README.md: Snakemake on a SLURM cluster)")


def test_gpu_requests_come_from_the_profile_and_train_nproc_per_node(tmp_path, profile_copy):
    params_project(tmp_path)
    resources = dry_run_resources(tmp_path, "--profile", str(profile_copy))
    for rule in ("fid_ref", "fid_bounds", "evaluate", "train"):
        assert "gres=gpu:1" in resources[rule] and "slurm_partition=a100" in resources[rule], rule
    for rule in ("download", "prepare", "split", "report"):
        assert "gres=" not in resources[rule] and "slurm_partition=short" in resources[rule], rule
    assert not any("gpu=" in line or "gpus=" in line for line in resources.values())  # no --gpus anywhere

    # Another gres name, or none (a CPU-only cluster): the profile's config, no rule edit.
    typed = dry_run_resources(tmp_path, "--profile", str(profile_copy), "--config", "gpu_gres=gpu:h100")
    assert "gres=gpu:h100:1" in typed["evaluate"]
    assert not any("gres=" in line for line in
                   dry_run_resources(tmp_path, "--profile", str(profile_copy), "--config", "gpu_gres=").values())

    params_project(tmp_path, train={"nproc_per_node": 4})
    resources = dry_run_resources(tmp_path, "--profile", str(profile_copy))
    assert "gres=gpu:4" in resources["train"] and "gres=gpu:1" in resources["evaluate"]
    # Locally (no profile) nothing asks for a GPU.
    assert not any("gres=" in line for line in dry_run_resources(tmp_path, "--cores", "2").values())


# -- a failed train job -------------------------------------------------------------------------
@pytest.mark.slow  # four Snakemake runs with training (about a minute): `make test-all` runs it
def test_a_failed_train_job_costs_its_outputs_but_not_the_run(tmp_path, mlflow_uri):
    """Snakemake 9 deletes a job's declared outputs when it starts the job and again when the job
    fails (workflow/profiles/README.md: "A failed job and its outputs"); the previous run survives in its checkpoints,
    which no orchestrator declares, and a rerun of its params publishes it again without training."""
    raw = tiny_raw_params(max_steps=4, batch_size=8)
    root = train_project(tmp_path / "project", raw)
    env = {**orchestrator_env(), "MLFLOW_TRACKING_URI": mlflow_uri}
    first = snakemake(root, "--cores", "all", "train", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    before, losses, record = generator_tensors(root / paths.RUN.generator), read_losses(root / paths.RUN.losses_csv), \
        json.loads((root / paths.RUN.run_record).read_text())

    failing = {**raw, "train": {**raw["train"], "device": "no-such-device"}}  # valid params, a failing stage
    (root / "params.yaml").write_text(yaml.safe_dump(failing, sort_keys=False))
    failed = snakemake(root, "--cores", "all", "train", env=env)
    assert failed.returncode != 0 and "train.device: unknown device 'no-such-device'" in failed.stdout + failed.stderr
    assert not (root / paths.RUN.generator).exists() and not (root / paths.RUN.samples_dir).exists()
    assert sorted(p.name for p in (root / paths.RUN.checkpoints_dir).glob("*.pt")) == ["step_0000004.pt"]
    planned = snakemake(root, "-n", "train", env=env)
    assert "Nothing to be done" not in planned.stdout + planned.stderr  # nothing stale passes for current

    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    again = snakemake(root, "--cores", "all", "train", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    after = generator_tensors(root / paths.RUN.generator)
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    assert read_losses(root / paths.RUN.losses_csv) == losses  # the same rows: no step was trained again
    assert json.loads((root / paths.RUN.run_record).read_text())["mlflow_run_id"] == record["mlflow_run_id"]


# -- a real SLURM cluster -----------------------------------------------------------------------
@pytest.fixture
def slurm_cluster() -> None:
    """Requested first by the test, so that a missing cluster skips (or fails) before any setup."""
    if slurm_cluster_running():
        return
    script = CLUSTER_SCRIPT.relative_to(REPO_ROOT)
    if os.environ.get("CI") == "1" and CLUSTER_SCRIPT.exists():
        missing = "SLURM is not installed" if not shutil.which("sinfo") else "no SLURM cluster is running"
        pytest.fail(f"{missing}; CI must run the cluster test (`{script} start` installs and starts one)")
    pytest.skip(f"no SLURM cluster is running (`{script} start`)")


def squeue_job(job_id: str) -> tuple[str, str]:
    """(state, working directory) of a job, finished ones included (MinJobAge in slurm.conf)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%Z"], capture_output=True,
                         text=True, timeout=30).stdout.strip()
    state, _, workdir = out.partition("|")
    return state, workdir


def test_two_gloo_ranks_train_as_one_slurm_job(slurm_cluster, tmp_path):
    """train.nproc_per_node: 2 through the cluster profile: one SLURM job whose torchrun starts 2
    gloo ranks, with what tests/test_ddp.py's 2-rank test expects of such a run."""
    started = time.monotonic()
    raw = tiny_raw_params(max_steps=4, batch_size=8)
    raw["train"]["nproc_per_node"] = 2
    root = train_project(tmp_path / "project", raw)
    tracking = f"sqlite:///{tmp_path / 'own.db'}"
    done = snakemake(root, "--profile", str(LOCAL_PROFILE), "train",
                     env={**orchestrator_env(), "MLFLOW_TRACKING_URI": tracking})
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    # It ran under SLURM: a job of the cluster, finished in this project, whose log (the
    # executor's, kept by the profile) shows the ranks' torchrun command, which `sagan train` ran.
    logs = list((root / ".snakemake/slurm_logs/rule_train").glob("*.log"))
    assert len(logs) == 1, (done.stdout + done.stderr)[-4000:]
    assert squeue_job(logs[0].stem) == ("COMPLETED", str(root))
    assert "torchrun --standalone --nproc_per_node=2 -m sagan train --params params.yaml" in logs[0].read_text()

    # What test_ddp.py's 2-rank test expects.
    record = json.loads((root / paths.RUN.run_record).read_text())
    assert record["device"] == "cpu x2" and record["steps"] == 4
    assert [int(r["step"]) for r in read_losses(root / paths.RUN.losses_csv)] == [4]
    assert sorted(p.name for p in (root / paths.RUN.checkpoints_dir).glob("*.pt")) == ["step_0000004.pt"]
    assert sorted(p.name for p in (root / paths.RUN.samples_dir).glob("*.png")) == ["epoch_001.png"]
    import mlflow

    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [record["mlflow_run_id"]]  # one run: rank 0 alone logs
    print(f"one 2-rank train job through SLURM: {time.monotonic() - started:.1f} s")
