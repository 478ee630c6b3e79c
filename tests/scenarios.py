"""The scripted sessions behind tests/test_pipeline.py: the smoke pipeline through DVC and through
Snakemake, each in a scratch git repo, as a user would drive it.

Each scenario runs once per test session and records what happened; the tests assert on the
record. The two are independent projects, so conftest.py starts them in background threads (which
mostly wait on subprocesses) when the session starts: they run beside each other and beside the
unit tests, using the cores that DVC, Snakemake and git leave idle.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import yaml

from sagan import paths, stages
from smoke import dvc_repro, make_scratch_project, orchestrator_env, run, snakemake_run

ALL_STAGES = set(stages.STAGES)
AFTER_TRAIN = {"train", "evaluate", "report"}
CHECK = stages.PARAMS_CHECK  # DVC's first stage, rerun by any change to params.yaml


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


def output_files(project: Path) -> dict[str, tuple[str, int]]:
    """Every file of every output of dvc.yaml but the params check's own stamp: its sha256 and mtime."""
    declared = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    outs = {next(iter(o)) if isinstance(o, dict) else o
            for s in declared.values() for key in ("outs", "metrics", "plots") for o in s.get(key, [])}
    files = [f for out in outs - {str(paths.PARAMS_CHECKED)} for f in [project / out, *(project / out).rglob("*")]]
    return {str(f.relative_to(project)): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
            for f in files if f.is_file()}


def repro_with_a_params_typo(project: Path) -> dict:
    """A typo in params.yaml (`dvc exp run -S train.lr_g=abc` writes the same): `dvc repro` must fail
    before DVC deletes any output. params.yaml is restored afterwards."""
    params_file = project / "params.yaml"
    text, before = params_file.read_text(), output_files(project)
    set_param(project, "train.lr_g", "abc")
    failed = dvc_repro(project, check=False, capture_output=True, text=True)
    params_file.write_text(text)
    return {"returncode": failed.returncode, "ran": dvc_ran(failed.stdout), "log": failed.stdout + failed.stderr,
            "outputs_before": before, "outputs_after": output_files(project)}


def checkpoints(project: Path) -> dict[Path, float]:
    """The resumable checkpoints (superseded ones live in a subdirectory) and their mtimes."""
    return {p: p.stat().st_mtime for p in (project / paths.CHECKPOINTS_DIR).glob("step_*.pt")}


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


# Resuming needs a kill after a checkpoint that this run wrote: one epoch more continues the
# finished run (step 400 of the smoke profile) to step 500, checkpointing at 450, where the kill
# comes; the resumed run trains the last 50 steps. Both are resumable changes: nothing retrains.
MORE_TRAINING = {"train.epochs": 5, "train.checkpoint_every": 50}


# docs/experiments.md's committed workflow: after a run, git takes the lock file, the params and the small
# outputs DVC compares (everything else under reports/ is git-ignored and in DVC's cache).
COMMITTED = ["dvc.lock", "params.yaml", "reports"]
# docs/experiments.md's worked sweep, half an epoch each here to keep the test session short.
SWEEP = [["-S", f"train.lr_d={lr_d}", "-S", "train.epochs=1", "-S", "train.max_steps=50"] for lr_d in ("1e-4", "2e-4")]


def commit(project: Path, message: str) -> str:
    """Commit as docs/experiments.md says; returns `git status --porcelain` after it (empty: nothing left out)."""
    run(["git", "add", *COMMITTED], project)
    run(["git", "commit", "-qm", message], project)
    return run(["git", "status", "--porcelain"], project, capture_output=True, text=True).stdout


def run_queue(project: Path, sweep: list[list[str]], timeout: float = 900) -> None:
    """Queue every experiment of `sweep`, start two queue workers (docs/experiments.md starts one: the same
    code path, here the two short experiments side by side), and wait until none is left. DVC's
    workers (dvc-task TemporaryWorkers) exit by themselves 10 s after the queue is empty."""
    for overrides in sweep:
        run(["dvc", "exp", "run", "--queue", *overrides], project, capture_output=True)
    run(["dvc", "queue", "start", "--jobs", "2"], project, capture_output=True)  # the guide's one worker, twice
    deadline = time.monotonic() + timeout
    while True:  # every `dvc queue status` is a DVC start (~1 CPU s, on cores the session needs): every 10 s
        time.sleep(10)
        status = run(["dvc", "queue", "status"], project, capture_output=True, text=True).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return
        assert time.monotonic() < deadline, "queued experiments did not finish within the timeout"


def experiments_fid(exp_show: list[dict]) -> dict[str, object]:
    """{experiment name: its FID} from `dvc exp show --json`."""
    return {rev["name"]: rev["data"]["metrics"][str(paths.METRICS)]["data"].get("fid")
            for baseline in exp_show for group in baseline.get("experiments") or [] for rev in group["revs"]}


# The attention study on the smoke profile's grid (studies/attention/smoke.yaml, 2 x 2), run in the
# scenario's project after the pipeline, so that it shares the data and FID reference already there.
STUDY = "attention"
STUDY_PIPELINE = str(paths.study_pipeline(STUDY))
ADDED_SEED = 2


def add_study_seed(project: Path, seed: int) -> None:
    """Add a seed to the study's axes, as a user edits study.yaml."""
    path = project / paths.study_file(STUDY)
    study = yaml.safe_load(path.read_text())
    study["axes"]["seed"].append(seed)
    path.write_text(yaml.safe_dump(study, sort_keys=False))


def study_record(project: Path, store: str | None = None) -> dict:
    """The study's results table, its report, and its MLflow runs in `store` (default: the project's
    SQLite file): tags, and the start and end times, artifact URI, metric names and logged models
    of each, by run id."""
    import mlflow
    import pandas as pd

    out = paths.StudyReports(STUDY)
    client = mlflow.MlflowClient(tracking_uri=store or f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sagan-smoke-attention")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return {"results": pd.read_csv(project / out.results_csv), "report": (project / out.report_md).read_text(),
            "runs": {r.info.run_id: r.data.tags for r in runs},
            "run_infos": {r.info.run_id: {"start": r.info.start_time, "end": r.info.end_time,
                                          "artifact_uri": r.info.artifact_uri, "metrics": set(r.data.metrics),
                                          "models": [client.get_logged_model(o.model_id).name
                                                     for o in r.outputs.model_outputs]} for r in runs}}


# The study of the Snakemake scenario logs through the project's tracking server, authentication
# on, as a user of it: `workflow/mlflow/server.sh` on a free port of 127.0.0.1.
SERVER_USER = ("study", "study-password-1")


@contextlib.contextmanager
def tracking_server(project: Path, state: Path) -> Iterator[dict[str, str]]:
    """Start the project's tracking server (state and stores in `state`) and give it an account;
    yields the environment its user exports. Stopped by the script, by its PID, afterwards."""
    import requests

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = [str(project / "workflow/mlflow/server.sh")]
    env = {**orchestrator_env(), "SAGAN_MLFLOW_DIR": str(state)}
    subprocess.run(script + ["start", "--port", str(port), "--workers", "1"], env=env, check=True, capture_output=True)
    try:
        url = f"http://127.0.0.1:{port}"
        admin = ("admin", (state / "admin-password").read_text().strip())
        requests.post(f"{url}/api/2.0/mlflow/users/create", auth=admin, timeout=60,
                      json={"username": SERVER_USER[0], "password": SERVER_USER[1]}).raise_for_status()
        yield {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": SERVER_USER[0],
               "MLFLOW_TRACKING_PASSWORD": SERVER_USER[1]}
    finally:
        subprocess.run(script + ["stop"], env=env, check=True, capture_output=True)


def snakemake_planned_jobs(project: Path, target: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run of `target` would execute."""
    out = run(["snakemake", "-n", "--cores", "all", target], project, capture_output=True, text=True)
    jobs = set()
    for block in re.split(r"\n(?:local)?rule ", out.stdout + out.stderr)[1:]:
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        jobs.add((block.split(":", 1)[0], wildcards.group(1) if wildcards else ""))
    return jobs


def copy_project(project: Path, name: str) -> Path:
    """A copy of the project beside it, for a story that runs side by side with the project's own."""
    copy = project.parent / name
    shutil.copytree(project, copy, symlinks=True)
    return copy


def run_dvc_scenario(project: Path) -> dict:
    rec: dict = {"project": project}
    # What studies/README.md's study command would run on this fresh project: the stages of its DAG.
    dag = run(["dvc", "dag", "--dot", STUDY_PIPELINE], project, capture_output=True, text=True).stdout
    rec["study_dag"] = set(re.findall(r'^"([^"]+)";$', dag, re.M))

    first = dvc_repro(project, capture_output=True, text=True)
    rec["first"] = dvc_ran(first.stdout)
    rec["second"] = dvc_ran(dvc_repro(project, capture_output=True, text=True).stdout)
    rec["metrics"] = json.loads((project / paths.METRICS).read_text())
    rec["typo"] = repro_with_a_params_typo(project)

    set_param(project, "report.title", "changed title")
    rec["report_param"] = dvc_ran(dvc_repro(project, capture_output=True, text=True).stdout)
    rec["left_out_of_commit"] = commit(project, "first run")

    # From here three independent stories, each in its own copy of the committed project, side by
    # side (one after the other they were the longest chain of the test session): more epochs,
    # killed and resumed, and commits compared; docs/experiments.md's experiment workflow, from a sweep to a
    # clone; and studies/README.md's study on the data and FID reference of the first run.
    with ThreadPoolExecutor(max_workers=2) as side:
        experiments = side.submit(run_dvc_experiments, copy_project(project, "experiments"))
        study = side.submit(run_dvc_study, copy_project(project, "study"))
        run_dvc_more_epochs(project, rec)
        rec |= experiments.result() | study.result()
    return rec


def run_dvc_more_epochs(project: Path, rec: dict) -> None:
    for key, value in MORE_TRAINING.items():
        set_param(project, key, value)
    rec["killed_at"] = kill_during_training(["dvc", "repro"], project)
    resumed = dvc_repro(project, capture_output=True, text=True)
    rec["resume_ran"], rec["resume_log"] = dvc_ran(resumed.stdout), resumed.stdout + resumed.stderr
    commit(project, "more epochs")
    rec["metrics_diff"] = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--json"], project,
                                         capture_output=True, text=True).stdout)
    plots = run(["dvc", "plots", "diff", "HEAD~1", "--json"], project, check=False, capture_output=True, text=True)
    rec["plots_diff"] = (plots.returncode, plots.stdout + plots.stderr)


def run_dvc_experiments(project: Path) -> dict:
    rec: dict = {"experiments_project": project}
    run_queue(project, SWEEP)
    rec["exp_show"] = json.loads(run(["dvc", "exp", "show", "--json"], project, capture_output=True, text=True).stdout)
    rec["exp_show_columns"] = run(["dvc", "exp", "show", "--only-changed", "--csv"], project, capture_output=True,
                                  text=True).stdout.splitlines()[0].split(",")
    fids = experiments_fid(rec["exp_show"])
    rec["exp_ran"] = {name: dvc_ran(run(["dvc", "queue", "logs", name], project, capture_output=True,
                                        text=True).stdout) for name in fids}
    rec["best"] = min(fids, key=lambda name: fids[name])
    run(["dvc", "exp", "apply", rec["best"]], project, capture_output=True)
    rec["after_apply"] = dvc_ran(dvc_repro(project, capture_output=True, text=True).stdout)
    rec["applied_metrics"] = json.loads((project / paths.METRICS).read_text())
    commit(project, f"best experiment: {rec['best']}")

    # A second machine: push to a remote, clone, pull; nothing may rerun there.
    run(["dvc", "remote", "add", "-d", "storage", str(project.parent / "remote")], project)
    run(["git", "commit", "-qam", "DVC remote"], project)
    run(["dvc", "push"], project, capture_output=True)
    clone = project.parent / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], project.parent)
    run(["dvc", "pull"], clone, capture_output=True)
    rec["clone"] = clone
    rec["clone_ran"] = dvc_ran(dvc_repro(clone, capture_output=True, text=True).stdout)
    rec["tags"] = mlflow_tags(project)  # the first run's, and the experiments' in the project's store
    return rec


def run_dvc_study(project: Path) -> dict:
    """studies/README.md's study command after the pipeline's first run: only the cells and the summary run,
    on the data and FID reference already there; then a seed more: only its cells (and the summary)
    are out of date."""
    study = run(["dvc", "repro", STUDY_PIPELINE], project, capture_output=True, text=True)
    rec: dict = {"study_ran": set(re.findall(r"Running stage '([^']+)'", study.stdout)),
                 "study": study_record(project)}
    add_study_seed(project, ADDED_SEED)
    rec["study_after_seed"] = set(json.loads(run(["dvc", "status", "--json", STUDY_PIPELINE], project,
                                                 capture_output=True, text=True).stdout))
    return rec


# The one-node SLURM cluster of workflow/slurm/local-cluster.sh (.ci/run starts it): where it runs,
# the Snakemake scenario's first run and its study go through the project's cluster profile.
SLURM_LOCAL = ["--profile", "workflow/profiles/slurm-local"]


def slurm_cluster_running() -> bool:
    """The cluster's node answers sinfo and takes jobs."""
    try:
        state = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return state.returncode == 0 and state.stdout.split()[:1] in (["idle"], ["mix"], ["alloc"])


def slurm_jobs(project: Path) -> list[str]:
    """The rule of every job the SLURM executor ran (its log: .snakemake/slurm_logs/rule_RULE/...)."""
    logs = project / ".snakemake/slurm_logs"  # rule_RULE/[WILDCARDS/]JOBID.log
    return sorted(p.relative_to(logs).parts[0].removeprefix("rule_") for p in logs.glob("rule_*/**/*.log"))


def run_snakemake_scenario(project: Path) -> dict:
    rec: dict = {"project": project, "slurm": slurm_cluster_running()}
    cluster = SLURM_LOCAL if rec["slurm"] else []
    rec["first"] = snakemake_planned(project)
    snakemake_run(project, *cluster, capture_output=True)
    rec["slurm_jobs"] = slurm_jobs(project)
    rec["second"] = snakemake_planned(project)
    set_param(project, "report.title", "changed title")
    rec["report_param"] = snakemake_planned(project)
    snakemake_run(project, capture_output=True)

    # studies/README.md's study, in a copy of the project beside the rest of this scenario (one after the
    # other they were the longest chain of the test session).
    with ThreadPoolExecutor(max_workers=1) as side:
        study = side.submit(run_snakemake_study, copy_project(project, "study"), cluster)
        run_snakemake_gate_and_more_epochs(project, rec)
        rec |= study.result()
    return rec


def run_snakemake_gate_and_more_epochs(project: Path, rec: dict) -> None:
    # The FID gate runs here, not in the DVC scenario, which is the longer of the two.
    check = run(["sagan", "check-fid"], project, check=False, capture_output=True, text=True)
    rec["check_fid"] = (check.returncode, check.stdout + check.stderr)
    # The first run's generator, registered in MLflow, drawn back; and the same grid from the file.
    for source, out in ((["--model-uri", "models:/sagan-smoke-generator/1"], "registry.png"),
                        (["--generator", str(paths.GENERATOR)], "file.png")):
        run(["sagan", "sample", *source, "--out", out], project, capture_output=True)
    rec["sampled"] = {name: (project / name).read_bytes() for name in ("registry.png", "file.png")}

    for key, value in MORE_TRAINING.items():
        set_param(project, key, value)
    rec["train_param"] = snakemake_planned(project)
    rec["killed_at"] = kill_during_training(["snakemake", "--cores", "all"], project)
    # A killed Snakemake leaves its directory lock behind; unlocking is the documented recovery.
    run(["snakemake", "--unlock", "--cores", "1"], project, capture_output=True)
    snakemake_run(project, capture_output=True)
    rec["resume_log"] = (project / "logs/train.log").read_text()
    rec["after_resume"] = snakemake_planned(project)
    rec["tags"] = mlflow_tags(project)


def run_snakemake_study(project: Path, cluster: list[str]) -> dict:
    """studies/README.md's study command (one SLURM job per cell where the cluster runs) after the pipeline's
    first run, every job logging through the tracking server (each cell's model too); then a seed
    more: only its cells (and the summary) are planned."""
    rec: dict = {"study_planned": snakemake_planned_jobs(project, "attention_study")}
    study_file = project / paths.study_file(STUDY)
    study = yaml.safe_load(study_file.read_text())
    study["base"]["mlflow"]["log_model"] = True
    study_file.write_text(yaml.safe_dump(study, sort_keys=False))
    state = project.parent / "mlflow-server"
    with tracking_server(project, state) as server_env:
        # snakemake_run's command, with the server's environment (orchestrator_env drops the URI)
        subprocess.run(["snakemake", "--cores", "all", "--rerun-incomplete", *cluster, "attention_study"],
                       cwd=project, env={**orchestrator_env(), **server_env}, check=True, capture_output=True)
    rec["study_slurm_jobs"] = [job for job in slurm_jobs(project) if job.startswith("study_")]
    rec["study"] = study_record(project, f"sqlite:///{state / 'mlflow.db'}")  # the server's store, read after it
    add_study_seed(project, ADDED_SEED)
    rec["study_after_seed"] = snakemake_planned_jobs(project, "attention_study")
    return rec


# Each scenario, and the test classes in test_pipeline.py that read its record.
SCENARIOS = {"dvc": (run_dvc_scenario, {"TestDvc", "TestDvcStudy"}),
             "snakemake": (run_snakemake_scenario, {"TestSnakemake"})}


# The scenarios are background work: their processes (and, through the local cluster's
# PropagatePrioProcess, their SLURM jobs) run niced, so that the unit tests keep a core and finish
# early, and the scenarios take every cycle the unit tests leave (docs/benchmarks.md).
BACKGROUND_NICE = 10


def in_background(build: Callable[[Path], dict], project: Path) -> dict:
    os.nice(BACKGROUND_NICE)  # Linux: this thread, the threads it starts and their processes only
    return build(project)


def start(selected_classes: set[str], workdir: Callable[[str], Path], pool: ThreadPoolExecutor) -> dict[str, Future]:
    """Start the scenarios whose test class is selected; `workdir(name)` gives a fresh directory."""
    return {name: pool.submit(in_background, build, make_scratch_project(workdir(name) / "project"))
            for name, (build, test_classes) in SCENARIOS.items() if test_classes & selected_classes}
