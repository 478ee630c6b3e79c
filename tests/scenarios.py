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
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import yaml

from helpers import free_port
from sagan import paths, stages
from smoke import dvc_repro, make_scratch_project, orchestrator_env, run, snakemake_run

if TYPE_CHECKING:
    import pandas as pd

ALL_STAGES = set(stages.STAGES)
AFTER_TRAIN = {"train", "evaluate", "report"}
CHECK = stages.PARAMS_CHECK  # DVC's first stage, rerun by any change to params.yaml


# -- what the scenarios record ------------------------------------------------------------------
# A field named with `ran` holds the DVC stages a command ran; one named with `planned`, the
# Snakemake rules (or (rule, wildcards) jobs) a dry run would run.
@dataclass
class Outcome:
    """A command's exit status and its stdout and stderr together."""
    returncode: int
    output: str


@dataclass
class ParamsTypo:
    """`dvc repro` with a typo in params.yaml, and the outputs before and after it."""
    returncode: int
    ran: set[str]
    log: str
    outputs_before: dict[str, tuple[str, int]]  # output_files(): path -> (sha256, mtime)
    outputs_after: dict[str, tuple[str, int]]


@dataclass
class StudyRun:
    """One MLflow run of the study: the parent or a cell's."""
    tags: dict[str, str]
    start: int  # ms since the epoch
    end: int
    artifact_uri: str
    metrics: set[str]  # the names of its metrics
    models: list[str]  # the names of its logged models


@dataclass
class StudyOutputs:
    """The study's results table and report, and its MLflow runs by run id."""
    results: pd.DataFrame
    report: str
    runs: dict[str, StudyRun]


@dataclass
class DvcMoreEpochs:
    """One epoch more on the first run, killed during training and resumed, committed and compared
    with the first run's commit."""
    killed_at: int  # the newest checkpoint step left after the kill
    resume_ran: set[str]
    resume_log: str
    metrics_diff: dict  # `dvc metrics diff HEAD~1 --json`
    plots_diff: Outcome  # `dvc plots diff HEAD~1 --json`


@dataclass
class DvcExperiments:
    """docs/experiments.md's workflow in a copy of the committed project: a queued sweep, the best
    experiment applied and committed, then pushed and pulled into a clone."""
    project: Path
    exp_show: list[dict]  # `dvc exp show --json`
    exp_show_columns: list[str]  # the header of `dvc exp show --only-changed --csv`
    ran: dict[str, set[str]]  # experiment name -> the stages its queue log shows it ran
    best: str  # the name of the experiment of lowest FID
    ran_after_apply: set[str]
    applied_metrics: dict  # metrics.json after `dvc exp apply`
    clone: Path
    clone_ran: set[str]
    mlflow_tags: list[dict[str, str]]  # of every run in the project's store: the first run's and the experiments'


@dataclass
class DvcStudy:
    """The attention study in a copy of the project after its first run, then a seed more."""
    ran: set[str]
    outputs: StudyOutputs
    out_of_date_after_seed: set[str]  # `dvc status` of the study's pipeline


@dataclass
class StudyRepro:
    """`dvc repro` of a study's pipeline in a copy of the project after its first run."""
    ran: set[str]
    outputs: StudyOutputs


@dataclass
class DvcScenario:
    project: Path
    study_dag: set[str]  # the stages of the study's DAG on the fresh project
    first_ran: set[str]
    second_ran: set[str]
    metrics: dict  # metrics.json of the first run
    params_typo: ParamsTypo
    report_param_ran: set[str]  # after a change of report.title
    left_out_of_commit: str  # `git status --porcelain` after committing as docs/experiments.md says
    more_epochs: DvcMoreEpochs
    experiments: DvcExperiments
    study: DvcStudy
    profiles: StudyRepro  # PROFILE_STUDY
    ad_hoc: StudyRepro  # a third study, declared here (AD_HOC_STUDY)


@dataclass
class SnakemakeMoreEpochs:
    """One epoch more on the first run: planned, killed during training, unlocked and resumed."""
    train_param_planned: set[str]
    killed_at: int  # the newest checkpoint step left after the kill
    resume_log: str  # logs/train.log of the resumed run
    planned_after_resume: set[str]


@dataclass
class SnakemakeStudy:
    """The study in a copy of the project after its first run, logging through the tracking server;
    then a seed more."""
    planned: set[tuple[str, str]]  # (rule, wildcards) jobs
    slurm_jobs: list[str]  # the rule of each of its SLURM jobs, sorted
    outputs: StudyOutputs  # its MLflow runs as the server's store has them
    planned_after_seed: set[tuple[str, str]]


@dataclass
class SnakemakeScenario:
    project: Path
    on_slurm: bool  # the first run and the study went through the local SLURM cluster
    first_planned: set[str]
    slurm_jobs: list[str]  # the rule of each SLURM job of the first run, sorted
    second_planned: set[str]
    report_param_planned: set[str]  # after a change of report.title
    check_fid: Outcome  # `sagan check-fid` after the first run
    samples: dict[str, bytes]  # PNG bytes: registry.png from the registered model, file.png from the file
    more_epochs: SnakemakeMoreEpochs
    mlflow_tags: list[dict[str, str]]  # of every run in the project's store, at the end
    study: SnakemakeStudy


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


def repro_with_a_params_typo(project: Path) -> ParamsTypo:
    """A typo in params.yaml (`dvc exp run -S train.lr_g=abc` writes the same): `dvc repro` must fail
    before DVC deletes any output. params.yaml is restored afterwards."""
    params_file = project / "params.yaml"
    text, before = params_file.read_text(), output_files(project)
    set_param(project, "train.lr_g", "abc")
    failed = dvc_repro(project, check=False, capture_output=True, text=True)
    params_file.write_text(text)
    return ParamsTypo(returncode=failed.returncode, ran=dvc_ran(failed.stdout), log=failed.stdout + failed.stderr,
                      outputs_before=before, outputs_after=output_files(project))


def checkpoints(project: Path) -> dict[Path, float]:
    """The resumable checkpoints (superseded ones live in a subdirectory) and their mtimes."""
    return {p: p.stat().st_mtime for p in (project / paths.RUN.checkpoints_dir).glob("step_*.pt")}


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
    return {rev["name"]: rev["data"]["metrics"][str(paths.RUN.metrics)]["data"].get("fid")
            for baseline in exp_show for group in baseline.get("experiments") or [] for rev in group["revs"]}


# The attention study on the smoke profile's grid (studies/attention/smoke.yaml, 2 x 2), run in the
# scenario's project after the pipeline, so that it shares the data and FID reference already there.
STUDY = "attention"
PROFILE_STUDY = "profiles"  # the second study, through DVC only: the paper's configuration against improved
# A third study, declared by the test suite itself: the mechanism knows no study by name.
AD_HOC_STUDY = "lr_d"
AD_HOC_DECLARATION = {
    "question": "Does a lower discriminator learning rate help?",
    "base": {"train": {"max_steps": 50, "eval_every": 0},
             "mlflow": {"experiment": f"sagan-smoke-{AD_HOC_STUDY}", "log_model": False, "registered_model": ""}},
    "axes": {"train.lr_d": [1.0e-4, 4.0e-4]}, "seeds": [0, 1], "baseline": "lr_d-0.0004"}
STUDY_PIPELINE = str(paths.study_pipeline(STUDY))
ADDED_SEED = 2


def add_study_seed(project: Path, seed: int) -> None:
    """Add a seed to the study, as a user edits study.yaml, and write its DVC file again
    (studies/README.md)."""
    path = project / paths.study_file(STUDY)
    study = yaml.safe_load(path.read_text())
    study["seeds"].append(seed)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    run(["sagan", "stages", "--write"], project, capture_output=True)


def study_outputs(project: Path, store: str | None = None, study: str = STUDY) -> StudyOutputs:
    """The study's results table, its report, and its MLflow runs in `store` (default: the project's
    SQLite file)."""
    import mlflow
    import pandas as pd

    out = paths.StudyReports(study)
    client = mlflow.MlflowClient(tracking_uri=store or f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"sagan-smoke-{study}")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return StudyOutputs(
        results=pd.read_csv(project / out.results_csv), report=(project / out.report_md).read_text(),
        runs={r.info.run_id: StudyRun(tags=r.data.tags, start=r.info.start_time, end=r.info.end_time,
                                      artifact_uri=r.info.artifact_uri, metrics=set(r.data.metrics),
                                      models=[client.get_logged_model(o.model_id).name
                                              for o in r.outputs.model_outputs]) for r in runs})


# The study of the Snakemake scenario logs through the project's tracking server, authentication
# on, as a user of it: `workflow/mlflow/server.sh` on a free port of 127.0.0.1.
SERVER_USER = ("study", "study-password-1")


@contextlib.contextmanager
def tracking_server(project: Path, state: Path) -> Iterator[dict[str, str]]:
    """Start the project's tracking server (state and stores in `state`) and give it an account;
    yields the environment its user exports. Stopped by the script, by its PID, afterwards."""
    import requests

    port = free_port()
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


def run_dvc_scenario(project: Path) -> DvcScenario:
    # What studies/README.md's study command would run on this fresh project: the stages of its DAG.
    dag = run(["dvc", "dag", "--dot", STUDY_PIPELINE], project, capture_output=True, text=True).stdout
    study_dag = set(re.findall(r'^"([^"]+)";$', dag, re.M))

    first_ran = dvc_ran(dvc_repro(project, capture_output=True, text=True).stdout)
    second_ran = dvc_ran(dvc_repro(project, capture_output=True, text=True).stdout)
    metrics = json.loads((project / paths.RUN.metrics).read_text())
    params_typo = repro_with_a_params_typo(project)

    set_param(project, "report.title", "changed title")
    report_param_ran = dvc_ran(dvc_repro(project, capture_output=True, text=True).stdout)
    left_out_of_commit = commit(project, "first run")

    # From here independent stories, each in its own copy of the committed project, side by side
    # (one after the other they were the longest chain of the test session): more epochs, killed
    # and resumed, and commits compared; docs/experiments.md's experiment workflow, from a sweep to
    # a clone; and studies/README.md's three studies on the data and FID reference of the first run.
    with ThreadPoolExecutor(max_workers=4) as side:
        experiments = side.submit(run_dvc_experiments, copy_project(project, "experiments"))
        study = side.submit(run_dvc_study, copy_project(project, "study"))
        profiles = side.submit(repro_study, copy_project(project, "profiles"), PROFILE_STUDY)
        ad_hoc = side.submit(run_ad_hoc_study, copy_project(project, "ad-hoc"))
        more_epochs = run_dvc_more_epochs(project)
        return DvcScenario(project=project, study_dag=study_dag, first_ran=first_ran, second_ran=second_ran,
                           metrics=metrics, params_typo=params_typo, report_param_ran=report_param_ran,
                           left_out_of_commit=left_out_of_commit, more_epochs=more_epochs,
                           experiments=experiments.result(), study=study.result(), profiles=profiles.result(),
                           ad_hoc=ad_hoc.result())


def run_dvc_more_epochs(project: Path) -> DvcMoreEpochs:
    for key, value in MORE_TRAINING.items():
        set_param(project, key, value)
    killed_at = kill_during_training(["dvc", "repro"], project)
    resumed = dvc_repro(project, capture_output=True, text=True)
    commit(project, "more epochs")
    metrics_diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--json"], project,
                                  capture_output=True, text=True).stdout)
    plots = run(["dvc", "plots", "diff", "HEAD~1", "--json"], project, check=False, capture_output=True, text=True)
    return DvcMoreEpochs(killed_at=killed_at, resume_ran=dvc_ran(resumed.stdout),
                         resume_log=resumed.stdout + resumed.stderr, metrics_diff=metrics_diff,
                         plots_diff=Outcome(plots.returncode, plots.stdout + plots.stderr))


def run_dvc_experiments(project: Path) -> DvcExperiments:
    run_queue(project, SWEEP)
    exp_show = json.loads(run(["dvc", "exp", "show", "--json"], project, capture_output=True, text=True).stdout)
    exp_show_columns = run(["dvc", "exp", "show", "--only-changed", "--csv"], project, capture_output=True,
                           text=True).stdout.splitlines()[0].split(",")
    fids = experiments_fid(exp_show)
    ran = {name: dvc_ran(run(["dvc", "queue", "logs", name], project, capture_output=True, text=True).stdout)
           for name in fids}
    best = min(fids, key=lambda name: fids[name])
    run(["dvc", "exp", "apply", best], project, capture_output=True)
    ran_after_apply = dvc_ran(dvc_repro(project, capture_output=True, text=True).stdout)
    applied_metrics = json.loads((project / paths.RUN.metrics).read_text())
    commit(project, f"best experiment: {best}")

    # A second machine: push to a remote, clone, pull; nothing may rerun there.
    run(["dvc", "remote", "add", "-d", "storage", str(project.parent / "remote")], project)
    run(["git", "commit", "-qam", "DVC remote"], project)
    run(["dvc", "push"], project, capture_output=True)
    clone = project.parent / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], project.parent)
    run(["dvc", "pull"], clone, capture_output=True)
    clone_ran = dvc_ran(dvc_repro(clone, capture_output=True, text=True).stdout)
    return DvcExperiments(project=project, exp_show=exp_show, exp_show_columns=exp_show_columns, ran=ran, best=best,
                          ran_after_apply=ran_after_apply, applied_metrics=applied_metrics, clone=clone,
                          clone_ran=clone_ran, mlflow_tags=mlflow_tags(project))


def run_dvc_study(project: Path) -> DvcStudy:
    """studies/README.md's study command after the pipeline's first run: only the cells and the summary run,
    on the data and FID reference already there; then a seed more: only its cells (and the summary)
    are out of date."""
    first = repro_study(project, STUDY)
    add_study_seed(project, ADDED_SEED)
    out_of_date = set(json.loads(run(["dvc", "status", "--json", STUDY_PIPELINE], project,
                                     capture_output=True, text=True).stdout))
    return DvcStudy(ran=first.ran, outputs=first.outputs, out_of_date_after_seed=out_of_date)


def repro_study(project: Path, study: str) -> StudyRepro:
    out = run(["dvc", "repro", str(paths.study_pipeline(study))], project, capture_output=True, text=True)
    return StudyRepro(ran=set(re.findall(r"Running stage '([^']+)'", out.stdout)),
                      outputs=study_outputs(project, study=study))


def run_ad_hoc_study(project: Path) -> StudyRepro:
    """A study the project does not have, declared as a user would: study.yaml, then its DVC file written."""
    declared = project / paths.study_file(AD_HOC_STUDY)
    declared.parent.mkdir(parents=True)
    declared.write_text(yaml.safe_dump(AD_HOC_DECLARATION, sort_keys=False))
    run(["sagan", "stages", "--write"], project, capture_output=True)
    return repro_study(project, AD_HOC_STUDY)


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


def run_snakemake_scenario(project: Path) -> SnakemakeScenario:
    on_slurm = slurm_cluster_running()
    cluster = SLURM_LOCAL if on_slurm else []
    first_planned = snakemake_planned(project)
    snakemake_run(project, *cluster, capture_output=True)
    slurm_jobs_of_first = slurm_jobs(project)
    second_planned = snakemake_planned(project)
    set_param(project, "report.title", "changed title")
    report_param_planned = snakemake_planned(project)
    snakemake_run(project, capture_output=True)

    # studies/README.md's study, in a copy of the project beside the rest of this scenario (one after the
    # other they were the longest chain of the test session).
    with ThreadPoolExecutor(max_workers=1) as side:
        study = side.submit(run_snakemake_study, copy_project(project, "study"), cluster)
        check_fid, samples = run_snakemake_gate_and_samples(project)
        more_epochs = run_snakemake_more_epochs(project)
        return SnakemakeScenario(project=project, on_slurm=on_slurm, first_planned=first_planned,
                                 slurm_jobs=slurm_jobs_of_first, second_planned=second_planned,
                                 report_param_planned=report_param_planned, check_fid=check_fid, samples=samples,
                                 more_epochs=more_epochs, mlflow_tags=mlflow_tags(project), study=study.result())


def run_snakemake_gate_and_samples(project: Path) -> tuple[Outcome, dict[str, bytes]]:
    # The FID gate runs here, not in the DVC scenario, which is the longer of the two.
    check = run(["sagan", "check-fid"], project, check=False, capture_output=True, text=True)
    # The first run's generator, registered in MLflow, drawn back; and the same grid from the file.
    for source, out in ((["--model-uri", "models:/sagan-smoke-generator/1"], "registry.png"),
                        (["--generator", str(paths.RUN.generator)], "file.png")):
        run(["sagan", "sample", *source, "--out", out], project, capture_output=True)
    samples = {name: (project / name).read_bytes() for name in ("registry.png", "file.png")}
    return Outcome(check.returncode, check.stdout + check.stderr), samples


def run_snakemake_more_epochs(project: Path) -> SnakemakeMoreEpochs:
    for key, value in MORE_TRAINING.items():
        set_param(project, key, value)
    train_param_planned = snakemake_planned(project)
    killed_at = kill_during_training(["snakemake", "--cores", "all"], project)
    # A killed Snakemake leaves its directory lock behind; unlocking is the documented recovery.
    run(["snakemake", "--unlock", "--cores", "1"], project, capture_output=True)
    snakemake_run(project, capture_output=True)
    return SnakemakeMoreEpochs(train_param_planned=train_param_planned, killed_at=killed_at,
                               resume_log=(project / "logs/train.log").read_text(),
                               planned_after_resume=snakemake_planned(project))


def run_snakemake_study(project: Path, cluster: list[str]) -> SnakemakeStudy:
    """studies/README.md's study command (one SLURM job per cell where the cluster runs) after the pipeline's
    first run, every job logging through the tracking server (each cell's model too); then a seed
    more: only its cells (and the summary) are planned."""
    planned = snakemake_planned_jobs(project, f"study_{STUDY}")
    study_file = project / paths.study_file(STUDY)
    study = yaml.safe_load(study_file.read_text())
    study["base"]["mlflow"]["log_model"] = True
    study_file.write_text(yaml.safe_dump(study, sort_keys=False))
    state = project.parent / "mlflow-server"
    with tracking_server(project, state) as server_env:
        # snakemake_run's command, with the server's environment (orchestrator_env drops the URI)
        subprocess.run(["snakemake", "--cores", "all", "--rerun-incomplete", *cluster, f"study_{STUDY}"],
                       cwd=project, env={**orchestrator_env(), **server_env}, check=True, capture_output=True)
    study_slurm_jobs = [job for job in slurm_jobs(project) if job.startswith("study_")]
    outputs = study_outputs(project, f"sqlite:///{state / 'mlflow.db'}")  # the server's store, read after it
    add_study_seed(project, ADDED_SEED)
    return SnakemakeStudy(planned=planned, slurm_jobs=study_slurm_jobs, outputs=outputs,
                          planned_after_seed=snakemake_planned_jobs(project, f"study_{STUDY}"))


# Each scenario, and the test classes in test_pipeline.py that read its record.
SCENARIOS = {"dvc": (run_dvc_scenario, {"TestDvc", "TestDvcStudy"}),
             "snakemake": (run_snakemake_scenario, {"TestSnakemake"})}


# The scenarios are background work: their processes (and, through the local cluster's
# PropagatePrioProcess, their SLURM jobs) run niced, so that the unit tests keep a core and finish
# early, and the scenarios take every cycle the unit tests leave (docs/benchmarks.md).
BACKGROUND_NICE = 10


def in_background(build: Callable[[Path], DvcScenario | SnakemakeScenario],
                  project: Path) -> DvcScenario | SnakemakeScenario:
    os.nice(BACKGROUND_NICE)  # Linux: this thread, the threads it starts and their processes only
    return build(project)


def start(selected_classes: set[str], workdir: Callable[[str], Path], pool: ThreadPoolExecutor) -> dict[str, Future]:
    """Start the scenarios whose test class is selected; `workdir(name)` gives a fresh directory."""
    return {name: pool.submit(in_background, build, make_scratch_project(workdir(name) / "project"))
            for name, (build, test_classes) in SCENARIOS.items() if test_classes & selected_classes}
