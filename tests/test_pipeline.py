"""The smoke pipeline end to end through DVC and Snakemake, in scratch git repos.

Proves the caching behaviour users rely on: a second run does nothing; a report param reruns only
report; a training param reruns train, evaluate and report but not the data stages or fid_ref; a
kill during training resumes from the checkpoint; and the FID regression check passes. Each
orchestrator's scenario runs once (module-scoped) and the tests assert on what it recorded.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from sagan.smoke import dvc_repro, make_scratch_project, orchestrator_env, run, snakemake_run

pytestmark = pytest.mark.integration

ALL_STAGES = {"download", "prepare", "split", "fid_ref", "train", "evaluate", "report"}
AFTER_TRAIN = {"train", "evaluate", "report"}


def set_param(project: Path, dotted: str, value) -> None:
    params_file = project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    section, key = dotted.split(".")
    params[section][key] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def dvc_ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def snakemake_planned(project: Path) -> set[str]:
    """The rules a dry run would execute, from its job-stats table."""
    out = run(["snakemake", "-n", "--cores", "all"], project, capture_output=True, text=True)
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return set()
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", table, re.M)} - {"all", "job"}


def checkpoints(project: Path) -> dict[Path, float]:
    """The resumable checkpoints (superseded ones live in a subdirectory) and their mtimes."""
    return {p: p.stat().st_mtime for p in (project / "models/checkpoints").glob("step_*.pt")}


def newest_checkpoint_step(project: Path) -> int:
    return max((int(p.stem.split("_")[1]) for p in checkpoints(project)), default=0)


def kill_during_training(cmd: list[str], project: Path, timeout: float = 300) -> int:
    """Start `cmd` and SIGKILL its whole process group as soon as training has written a
    checkpoint. Returns the newest checkpoint step left after the kill."""
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=project, env=orchestrator_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not any(mtime >= started for mtime in checkpoints(project).values()):
            assert proc.poll() is None, f"{cmd} finished before a checkpoint appeared"
            assert time.monotonic() < deadline, "no checkpoint within the timeout"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return newest_checkpoint_step(project)


def mlflow_tags(project: Path) -> list[dict]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return [r.data.tags for r in runs]


@pytest.fixture(scope="module")
def dvc_scenario(tmp_path_factory):
    project = make_scratch_project(tmp_path_factory.mktemp("dvc") / "project")
    rec: dict = {"project": project}

    first = dvc_repro(project, capture_output=True, text=True)
    rec["first"] = dvc_ran(first.stdout)
    rec["second"] = dvc_ran(dvc_repro(project, capture_output=True, text=True).stdout)
    rec["metrics"] = json.loads((project / "reports/metrics.json").read_text())
    check = run(["sagan", "check-fid"], project, check=False, capture_output=True, text=True)
    rec["check_fid"] = (check.returncode, check.stdout + check.stderr)

    set_param(project, "report.title", "changed title")
    rec["report_param"] = dvc_ran(dvc_repro(project, capture_output=True, text=True).stdout)
    run(["git", "commit", "-qam", "report title"], project)

    exp = run(["dvc", "exp", "run", "-S", "train.lr_g=2e-4"], project, capture_output=True, text=True)
    rec["exp_run"] = dvc_ran(exp.stdout)
    show = run(["dvc", "exp", "show", "--json"], project, capture_output=True, text=True)
    rec["exp_show"] = show.stdout

    set_param(project, "train.lr_g", 3e-4)
    rec["killed_at"] = kill_during_training(["dvc", "repro"], project)
    resumed = dvc_repro(project, capture_output=True, text=True)
    rec["resume_ran"], rec["resume_log"] = dvc_ran(resumed.stdout), resumed.stdout + resumed.stderr
    rec["tags"] = mlflow_tags(project)
    return rec


@pytest.fixture(scope="module")
def snakemake_scenario(tmp_path_factory):
    project = make_scratch_project(tmp_path_factory.mktemp("smk") / "project")
    rec: dict = {"project": project}
    rec["first"] = snakemake_planned(project)
    snakemake_run(project, capture_output=True)
    rec["second"] = snakemake_planned(project)

    set_param(project, "report.title", "changed title")
    rec["report_param"] = snakemake_planned(project)
    snakemake_run(project, capture_output=True)

    set_param(project, "train.lr_g", 3e-4)
    rec["train_param"] = snakemake_planned(project)
    rec["killed_at"] = kill_during_training(["snakemake", "--cores", "all"], project)
    # A killed Snakemake leaves its directory lock behind; unlocking is the documented recovery.
    run(["snakemake", "--unlock", "--cores", "1"], project, capture_output=True)
    snakemake_run(project, capture_output=True)
    rec["resume_log"] = (project / "logs/train.log").read_text()
    rec["after_resume"] = snakemake_planned(project)
    rec["tags"] = mlflow_tags(project)
    return rec


class TestDvc:
    def test_first_run_runs_every_stage_and_second_none(self, dvc_scenario):
        assert dvc_scenario["first"] == ALL_STAGES
        assert dvc_scenario["second"] == set()

    def test_report_param_reruns_only_report(self, dvc_scenario):
        assert dvc_scenario["report_param"] == {"report"}

    def test_exp_run_with_train_param_reruns_train_evaluate_report(self, dvc_scenario):
        assert dvc_scenario["exp_run"] == AFTER_TRAIN
        assert '"fid"' in dvc_scenario["exp_show"] and "2e-04" in dvc_scenario["exp_show"].replace("0.0002", "2e-04")

    def test_kill_during_train_then_rerun_resumes(self, dvc_scenario):
        assert dvc_scenario["killed_at"] > 0
        assert dvc_scenario["resume_ran"] == AFTER_TRAIN
        assert f"(step {dvc_scenario['killed_at']} of" in dvc_scenario["resume_log"]

    def test_outputs_and_labels(self, dvc_scenario):
        project, metrics = dvc_scenario["project"], dvc_scenario["metrics"]
        assert (project / "reports/report.html").stat().st_size > 10_000
        assert metrics["weights_kind"] == "standin" and metrics["synthetic_data"] is True
        assert metrics["fid"] > 0 and metrics["n_gen"] == 256

    def test_fid_regression_check_passes(self, dvc_scenario):
        rc, out = dvc_scenario["check_fid"]
        assert rc == 0, out

    def test_runs_are_tagged_with_dvc(self, dvc_scenario):
        assert {t.get("sagan.orchestrator") for t in dvc_scenario["tags"]} == {"dvc"}


class TestSnakemake:
    def test_first_run_plans_every_rule_and_second_none(self, snakemake_scenario):
        assert snakemake_scenario["first"] == ALL_STAGES
        assert snakemake_scenario["second"] == set()

    def test_report_param_reruns_only_report(self, snakemake_scenario):
        assert snakemake_scenario["report_param"] == {"report"}

    def test_train_param_reruns_train_evaluate_report(self, snakemake_scenario):
        assert snakemake_scenario["train_param"] == AFTER_TRAIN

    def test_kill_during_train_then_rerun_resumes(self, snakemake_scenario):
        assert f"(step {snakemake_scenario['killed_at']} of" in snakemake_scenario["resume_log"]
        assert snakemake_scenario["after_resume"] == set()

    def test_runs_are_tagged_with_snakemake(self, snakemake_scenario):
        assert {t.get("sagan.orchestrator") for t in snakemake_scenario["tags"]} == {"snakemake"}
