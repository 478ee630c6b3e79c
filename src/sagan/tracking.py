"""MLflow plumbing and run metadata shared by train, evaluate and report.

`train` opens one MLflow run per training run (`MlflowRun.start_or_resume`) and records its id in
reports/train/run.json; the later stages log into that same run (`MlflowRun.from_run_record`).
Every stage talks to MLflow through an MlflowClient with the run id spelled out, never through
mlflow's fluent API and its process-global active run.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import subprocess
import time
from pathlib import Path

from sagan import paths
from sagan.errors import SaganError, first_line
from sagan.params import MlflowParams, redact_url

_MLFLOW_BATCH = 100  # MLflow's limit on params per log_batch call
# The run_metadata keys that also tag the MLflow run, as `sagan.KEY`.
TAGGED_METADATA = ("git_commit", "data_fingerprint", "profile", "orchestrator", "synthetic_data")
# MLflow 3's UI opens an experiment on its GenAI overview unless it is tagged as model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def configured_uri(mlflow_params: MlflowParams) -> str:
    """MLFLOW_TRACKING_URI wins (a shared server); else the params' URI. As written: run.json
    records this, not a path of the machine it ran on."""
    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow_params.tracking_uri


def tracking_uri(mlflow_params: MlflowParams) -> str:
    """The store to open: configured_uri, with a relative SQLite path taken relative to the project
    root. That is DVC_ROOT when DVC runs the stage (a queued `dvc exp run` runs in a temporary copy
    of the project, and DVC sets DVC_ROOT to the project it came from, so its runs land in the
    project's store, not in the copy's), else the working directory."""
    uri = configured_uri(mlflow_params)
    root = os.environ.get("DVC_ROOT")
    relative = uri.startswith("sqlite:///") and not uri.startswith("sqlite:////")
    return f"sqlite:///{Path(root) / uri.removeprefix('sqlite:///')}" if root and relative else uri


def orchestrator() -> str:
    """Who ran this stage: the Snakefile exports SAGAN_ORCHESTRATOR; DVC sets DVC_ROOT for stages."""
    if os.environ.get("SAGAN_ORCHESTRATOR"):
        return os.environ["SAGAN_ORCHESTRATOR"]
    if os.environ.get("DVC_ROOT") or os.environ.get("DVC_STAGE"):
        return "dvc"
    return "cli"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def run_metadata(mlflow_params: MlflowParams, data_fingerprint: str, synthetic_data: bool) -> dict:
    """Where a training run is tracked and what it ran on: run.json's fields and, through run_tags,
    the MLflow run's tags. Calls git: compute it once per run."""
    return {"mlflow_experiment": mlflow_params.experiment, "tracking_uri": redact_url(configured_uri(mlflow_params)),
            "profile": mlflow_params.profile, "git_commit": git_commit(), "data_fingerprint": data_fingerprint,
            "synthetic_data": bool(synthetic_data), "orchestrator": orchestrator(),
            "dvc_experiment": os.environ.get("DVC_EXP_NAME", "")}  # set by `dvc exp run`, queued or not


def run_tags(metadata: dict) -> dict[str, str]:
    """The MLflow tags for `metadata`: `sagan.KEY` (booleans as true/false) and MLflow's git tag.
    A DVC experiment's run is tagged with, and named after, the experiment, so that `dvc exp show`
    and the MLflow UI can be matched row by row."""
    tags = {f"sagan.{key}": str(metadata[key]).lower() if isinstance(metadata[key], bool) else str(metadata[key])
            for key in TAGGED_METADATA}
    # MLflow's own source tags: the UI's Source column names the entry point and the commit.
    tags |= {"mlflow.source.git.commit": metadata["git_commit"], "mlflow.source.name": "sagan train",
             "mlflow.source.type": "LOCAL"}
    if metadata["dvc_experiment"]:
        tags |= {"sagan.dvc_experiment": metadata["dvc_experiment"], "mlflow.runName": metadata["dvc_experiment"]}
    return tags


@contextlib.contextmanager
def _creation_lock(uri: str):
    """For a SQLite store, an exclusive lock on `<db>.lock` while the store is first opened: MLflow
    creates and migrates the tables on first use, and two processes doing that at once fail
    ("table ... already exists"). Other stores create nothing locally."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def client(mlflow_params: MlflowParams):
    """An MlflowClient on the params' store, opened (and, if new, created) under _creation_lock,
    or one line naming mlflow.tracking_uri. mlflow is imported here: it is slow to import."""
    from mlflow import MlflowClient

    uri = tracking_uri(mlflow_params)
    try:
        with _creation_lock(uri):
            mlflow_client = MlflowClient(uri)
            mlflow_client.search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types for a bad or unreachable store
        source = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "mlflow.tracking_uri"
        raise SaganError(f"{source}: cannot open the MLflow store {redact_url(uri)} "
                         f"({type(exc).__name__}: {first_line(exc)[:200]})",
                         hint="use sqlite:///mlflow.db, a file: path or an http(s):// tracking server") from exc
    return mlflow_client


def read_run_record(path: Path = paths.RUN_RECORD) -> dict:
    try:
        return json.loads(paths.require(path).read_text())
    except json.JSONDecodeError as exc:
        raise paths.bad_input(path, f"not valid JSON ({exc})") from exc


class MlflowRun:
    """One MLflow run, logged to by its id: train's own, or the training run a later stage adds to."""

    def __init__(self, mlflow_client, run_id: str):
        self.client, self.run_id = mlflow_client, run_id

    @classmethod
    def start_or_resume(cls, mlflow_params: MlflowParams, run_id: str | None, tags: dict[str, str],
                        params: dict) -> MlflowRun:
        """Train's run: `run_id` (from a resumed checkpoint) reopened, else a new run with `tags` and `params`."""
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        mlflow_client = client(mlflow_params)
        if run_id:
            try:
                mlflow_client.get_run(run_id)
                mlflow_client.update_run(run_id, status="RUNNING")
                return cls(mlflow_client, run_id)
            except MlflowException:
                print(f"sagan train: MLflow run {run_id} from the checkpoint is not in "
                      f"{tracking_uri(mlflow_params)}; starting a new MLflow run")
        found = mlflow_client.get_experiment_by_name(mlflow_params.experiment)
        if found is None:
            experiment_id = mlflow_client.create_experiment(mlflow_params.experiment, tags=EXPERIMENT_KIND)
        else:  # an experiment made before the tag (or by hand) gets it on its next run
            experiment_id = found.experiment_id
            for key, value in EXPERIMENT_KIND.items():
                if found.tags.get(key) != value:
                    mlflow_client.set_experiment_tag(experiment_id, key, value)
        run_id = mlflow_client.create_run(experiment_id, tags=tags).info.run_id
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), _MLFLOW_BATCH):
            mlflow_client.log_batch(run_id, params=items[i:i + _MLFLOW_BATCH])
        return cls(mlflow_client, run_id)

    @classmethod
    def from_run_record(cls, mlflow_params: MlflowParams, record_path: Path = paths.RUN_RECORD) -> MlflowRun:
        """The training stage's run, named by run.json, for a later stage to log into."""
        from mlflow.exceptions import MlflowException

        run_id = read_run_record(record_path).get("mlflow_run_id")
        if not run_id:
            raise paths.bad_input(record_path, "has no 'mlflow_run_id'")
        mlflow_client = client(mlflow_params)
        try:  # looked up here, so that a failure while logging is never reported as a missing run
            mlflow_client.get_run(run_id)
        except MlflowException as exc:
            raise SaganError(f"MLflow run {run_id} from {record_path} is not in {tracking_uri(mlflow_params)}: "
                             f"{str(exc).splitlines()[0]}", hint="rerun `sagan train` against this store") from exc
        return cls(mlflow_client, run_id)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """One batch; NaN values (the gammas of a model without attention) are left out."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)  # the MLflow store is not a hashed output
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()
                                                    if not math.isnan(v)])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def finish(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")
