"""MLflow plumbing and run metadata shared by train, evaluate and report.

`train` opens one MLflow run per training run (`MlflowRun.start_or_resume`) and records its id in
reports/train/run.json; the later stages log into that same run (`MlflowRun.from_run_record`).
Every stage talks to MLflow through an MlflowClient with the run id spelled out, never through
mlflow's fluent API and its process-global active run.

The store is a SQLite file on one machine, or a team's tracking server (http://...: started by
workflow/mlflow/server.sh) that jobs on many nodes log to at once; the calls are the same. A server
takes MLflow's credentials (MLFLOW_TRACKING_USERNAME/PASSWORD), which nothing here records, and
what it refuses or never answers is one line (server_error).

What the MLflow UI's runs table shows comes from here: the Source column (`run_tags`), the Dataset
column (`training_input`, `reference_input`) and the metric names (below).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from sagan import paths
from sagan.digest import file_digest
from sagan.errors import SaganError, one_line
from sagan.params import MlflowParams, redact_url
from sagan.run_record import RunRecord

_MLFLOW_BATCH = 100  # MLflow's limit on params per log_batch call
# The run_metadata keys that also tag the MLflow run, as `sagan.KEY`.
TAGGED_METADATA = ("git_commit", "data_fingerprint", "profile", "orchestrator", "synthetic_data")
# The experiment's kind: model training, not a GenAI app. (MLflow 3.17's UI takes the kind from its
# GenAI / Model training switch, which ui_url sets, and reads this tag only with that switch off.)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}

# MLflow metric names, chosen to sort and group in the UI: evaluate's scores keep metrics.json's keys
# (`fid`, `kid_mean`, `swd`, `floor/fid`, ...: the columns of `dvc exp show` too); each log point's
# losses are `train/<losses.csv column>` and the evaluations during training `eval/<evals.csv
# column>`, by step; the run's summary at the end of training is these three.
METRIC_STEPS = "train/steps"
METRIC_WALL_TIME = "train/wall_time_s"
METRIC_IMG_PER_S = "train/mean_img_per_s"

# A run's dataset inputs (the UI's Dataset column), told apart by their `mlflow.data.context` tag.
TRAINING_CONTEXT, EVALUATION_CONTEXT = "training", "evaluation"
DIGEST_HEX = 8  # hex digits of a sha256 shown as a dataset's digest, as MLflow's own datasets do
# The UI's runs table in its Model training mode (MLflow 3.17 opens in GenAI mode, on an experiment's
# GenAI overview, until a browser picks Model training), lowest FID first.
UI_RUNS_QUERY = "workflowType=machine_learning&orderByKey=metrics.%60fid%60&orderByAsc=true"


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


def ui_url(mlflow_params: MlflowParams, server: str = "http://127.0.0.1:5000") -> str:
    """The page of the MLflow UI at `server` to open on: the experiment's runs table (UI_RUNS_QUERY),
    or the experiment list while the experiment does not exist yet."""
    experiment = client(mlflow_params).get_experiment_by_name(mlflow_params.experiment)
    if experiment is None:
        return f"{server}/#/experiments?workflowType=machine_learning"
    return f"{server}/#/experiments/{experiment.experiment_id}/runs?{UI_RUNS_QUERY}"


def data_name(synthetic: bool) -> str:
    """What the data is called in the MLflow UI: a stand-in says so."""
    return "synthetic CelebA" if synthetic else "CelebA"


def _dataset_input(name: str, digest: str, source: Path, context: str, profile: dict, schema: dict | None = None):
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dataset = Dataset(name=name, digest=digest[:DIGEST_HEX], source_type="local",
                      source=json.dumps({"uri": source.as_posix()}), profile=json.dumps(profile),
                      schema=None if schema is None else json.dumps(schema))
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def training_input(info):
    """The prepared shards a run trains on (`info`: sagan.data.loader.DatasetInfo), as its `training`
    dataset input: named CelebA or synthetic CelebA, the digest the data fingerprint (the sha256 of
    the manifest; its first DIGEST_HEX hex digits, and all of it in the profile and the run's
    `sagan.data_fingerprint` tag),
    the source data/prepared, the schema the uint8 NHWC images, the profile their counts and sizes."""
    import numpy as np
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.types import Schema, TensorSpec

    schema = TensorDatasetSchema(Schema([TensorSpec(np.dtype(np.uint8), (-1, info.size, info.size, 3), "image")]))
    profile = {"num_rows": info.n_train, "n_train": info.n_train, "n_val": info.n_val, "size": info.size,
               "crop": info.crop, "synthetic_data": bool(info.synthetic), "fingerprint": info.fingerprint}
    return _dataset_input(data_name(info.synthetic), info.fingerprint, paths.PREPARED_DIR, TRAINING_CONTEXT,
                          profile, schema.to_dict())


def reference_input(reference: Path, evaluation):
    """The FID reference (data/fid/reference.npz, whose bytes are a pure function of its inputs) that
    `evaluation` (a sagan.metrics.results.Evaluation) was measured against, as the run's `evaluation`
    dataset input; the digest is the file's sha256 (all of it in the profile)."""
    sha256 = file_digest(reference)
    split, synthetic = evaluation.reference_split, bool(evaluation.synthetic_data)
    profile = {"num_rows": evaluation.numbers["n_ref"], "reference_split": split, "extractor": evaluation.extractor,
               "weights_kind": evaluation.weights_kind, "synthetic_data": synthetic, "sha256": sha256}
    return _dataset_input(f"{data_name(synthetic)} FID reference ({split})", sha256, reference, EVALUATION_CONTEXT,
                          profile)


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


def uri_source() -> str:
    """Where the store's URI came from, for messages: the environment or params.yaml."""
    return "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "mlflow.tracking_uri"


def shown_uri(mlflow_params: MlflowParams) -> str:
    """The store's URI as messages show it: redact_url's, no password of a URL in it."""
    return redact_url(tracking_uri(mlflow_params))


def is_server(uri: str) -> bool:
    """Whether `uri` is a tracking server's (workflow/mlflow/server.sh), not a store of files."""
    return uri.startswith(("http://", "https://"))


def _ask(uri: str, endpoint: str):
    """GET `endpoint` of the tracking server at `uri` once, as MLflow's client would (its
    credentials, from the environment or ~/.mlflow/credentials, and TLS settings): the response,
    or MlflowException when there is none."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    return http_request(get_default_host_creds(uri), endpoint, "GET", max_retries=0, timeout=10,
                        raise_on_status=False)


def _server_version(uri: str) -> str | None:
    """The MLflow version of the tracking server at `uri` (its /version), or None when it does not say."""
    from mlflow.exceptions import MlflowException

    try:
        answer = _ask(uri, "/version")
    except MlflowException:
        return None
    return answer.text.strip() if answer.ok and len(answer.text) < 50 else None


def server_error(exc: BaseException, uri: str) -> SaganError | None:
    """One line for what a tracking server at `uri` (http:// or https://) did with a request that
    raised `exc`: no answer, credentials refused (401), no permission (403), or an endpoint that its
    MLflow version lacks; None for anything else (a store's own answer, such as a missing run)."""
    import requests
    from mlflow import __version__
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.utils.credentials import read_mlflow_creds  # the environment's, else ~/.mlflow/credentials

    if not is_server(uri):
        return None
    shown, source, chain = redact_url(uri), uri_source(), exc
    while chain is not None:  # MLflow raises its own exception while handling requests' one
        if isinstance(chain, (requests.ConnectionError, requests.Timeout)):
            return SaganError(f"{source}: no MLflow tracking server answers at {shown} ({type(chain).__name__})",
                              hint="start it: `workflow/mlflow/server.sh start` (`workflow/mlflow/server.sh "
                                   "status` tells whether it runs), or ask whoever runs it")
        chain = chain.__cause__ or chain.__context__
    if not isinstance(exc, MlflowException):
        return None
    status, endpoint = exc.get_http_status_code(), str(exc).partition("endpoint ")[2].partition(" ")[0]
    if status == 401:
        return SaganError(f"{source}: the tracking server at {shown} refused the credentials (401 Unauthorized)",
                          hint="export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD of your account on "
                               "that server (or keep them in ~/.mlflow/credentials), never in params.yaml")
    if status not in (403, 404) or isinstance(exc, RestException):  # a JSON answer: the store's, not a route's
        return None
    version = _server_version(uri)
    if status == 404 or (version and version != __version__):  # an unknown route is 403 to a non-admin
        return SaganError(f"{source}: the tracking server at {shown} (MLflow {version or 'of unknown version'}) "
                          f"has no endpoint {endpoint}, which this project's MLflow {__version__} calls",
                          hint=f"run the server with MLflow {__version__}: `workflow/mlflow/server.sh start` "
                               f"uses the project's")
    return SaganError(f"{source}: the tracking server at {shown} denied user '{read_mlflow_creds().username}' "
                      f"{endpoint} (403 Permission denied)",
                      hint="ask the server's admin for EDIT permission on the experiment (or registered model)")


class _ServerClient:
    """An MlflowClient whose calls that a tracking server refuses or never answers raise one line
    (server_error); every other exception is the client's own."""

    def __init__(self, mlflow_client, uri: str):
        self._client, self._uri = mlflow_client, uri

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            try:
                return attribute(*args, **kwargs)
            except Exception as exc:
                if (error := server_error(exc, self._uri)) is None:
                    raise
                raise error from exc
        return call


def client(mlflow_params: MlflowParams):
    """An MlflowClient on the params' store, opened (and, if new, created) under _creation_lock,
    or one line naming mlflow.tracking_uri. mlflow is imported here: it is slow to import. On a
    tracking server, one whose calls that the server refuses raise one line (_ServerClient); one
    that does not answer is named at once, not after MLflow's minutes of retries."""
    from mlflow import MlflowClient

    uri = tracking_uri(mlflow_params)
    try:
        if is_server(uri):
            _ask(uri, "/health")  # no retries: a server that is not there is said at once
        with _creation_lock(uri):
            mlflow_client = MlflowClient(uri)
            mlflow_client.search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types for a bad or unreachable store
        if (error := server_error(exc, uri)) is not None:
            raise error from exc
        raise SaganError(f"{uri_source()}: cannot open the MLflow store {redact_url(uri)} "
                         f"({type(exc).__name__}: {one_line(exc)})",
                         hint="use sqlite:///mlflow.db, a file: path or an http(s):// tracking server") from exc
    return _ServerClient(mlflow_client, uri) if is_server(uri) else mlflow_client


class MlflowRun:
    """One MLflow run, logged to by its id: train's own, or the training run a later stage adds to."""

    def __init__(self, mlflow_client, run_id: str):
        self.client, self.run_id = mlflow_client, run_id
        self.system_metrics = None  # MLflow's SystemMetricsMonitor while one runs (start_system_metrics)

    @classmethod
    def start_or_resume(cls, mlflow_params: MlflowParams, run_id: str | None, tags: dict[str, str],
                        params: dict, training_data=None) -> MlflowRun:
        """Train's run: `run_id` (from a resumed checkpoint) reopened, else a new run with `tags` and
        `params`; with its `training_data` input (training_input) and, with `mlflow.system_metrics`,
        MLflow's system metrics until `finish`."""
        run = cls._open(mlflow_params, run_id, tags, params)
        if training_data is not None:
            run.log_dataset(training_data)
        if mlflow_params.system_metrics:
            run.start_system_metrics(tracking_uri(mlflow_params), resumed=run.run_id == run_id)
        return run

    @classmethod
    def _open(cls, mlflow_params: MlflowParams, run_id: str | None, tags: dict[str, str], params: dict) -> MlflowRun:
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
                      f"{shown_uri(mlflow_params)}; starting a new MLflow run")
        found = mlflow_client.get_experiment_by_name(mlflow_params.experiment)
        if found is None:
            try:
                experiment_id = mlflow_client.create_experiment(mlflow_params.experiment, tags=EXPERIMENT_KIND)
            except MlflowException:  # made meanwhile by a run beside this one (a study's cells)
                found = mlflow_client.get_experiment_by_name(mlflow_params.experiment)
                if found is None:
                    raise
        if found is not None:  # an experiment made before the tag (or by hand) gets it on its next run
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
    def from_run_record(cls, mlflow_params: MlflowParams, record: RunRecord, record_path: Path) -> MlflowRun:
        """The training run that `record`, read from `record_path`, names, for a later stage to log into."""
        from mlflow.exceptions import MlflowException

        run_id = record.mlflow_run_id
        mlflow_client = client(mlflow_params)
        try:  # looked up here, so that a failure while logging is never reported as a missing run
            mlflow_client.get_run(run_id)
        except MlflowException as exc:
            raise SaganError(f"MLflow run {run_id} from {record_path} is not in {shown_uri(mlflow_params)}: "
                             f"{one_line(exc, limit=None)}", hint="rerun `sagan train` against this store") from exc
        return cls(mlflow_client, run_id)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """One batch; NaN values (the gammas of a model without attention) are left out."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)  # the MLflow store is not a hashed output
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()
                                                    if not math.isnan(v)])

    def log_evaluation(self, scores: dict[str, float], reference: Path, evaluation) -> None:
        """Evaluate's `scores` and, as the run's `evaluation` input, the FID reference they were
        measured against (reference_input; none when the file is gone)."""
        self.log_metrics(scores)
        if reference.is_file():
            self.log_dataset(reference_input(reference, evaluation))

    def log_dataset(self, dataset_input) -> None:
        """`dataset_input` (mlflow.entities.DatasetInput) as an input of the run, unless the run has
        it already (same name, digest and context): a resumed run or a repeated evaluate adds none."""
        def key(item) -> tuple:
            return (item.dataset.name, item.dataset.digest, sorted((t.key, t.value) for t in item.tags))

        if all(key(have) != key(dataset_input) for have in self.client.get_run(self.run_id).inputs.dataset_inputs):
            try:
                self.client.log_inputs(self.run_id, datasets=[dataset_input])
            except Exception as exc:
                # Two runs logging the same new dataset at once (a study's cells on one server) race
                # on its insert, and the store's UNIQUE constraint refuses the second: by then the
                # dataset exists, so a second try links it to this run.
                if "UNIQUE constraint failed" not in str(exc):
                    raise
                self.client.log_inputs(self.run_id, datasets=[dataset_input])

    def start_system_metrics(self, uri: str, resumed: bool) -> None:
        """MLflow's system metrics (`system/cpu_utilization_percentage`, memory, disk, network, and
        GPUs where nvidia-ml-py finds them), sampled every 10 s (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL)
        in a thread until `finish`; a resumed run continues their steps. A monitor that cannot start
        costs a warning, never the training."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(self.run_id, resume_logging=resumed, tracking_uri=uri)
            monitor.start()
        except Exception as exc:  # psutil missing, a store that refuses: the run goes on without them
            print(f"sagan train: warning: no MLflow system metrics ({type(exc).__name__}: "
                  f"{one_line(exc)})", file=sys.stderr)
            return
        self.system_metrics = monitor

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def metric_steps(self, key: str) -> set[int]:
        """The steps at which the run has metric `key`."""
        return {metric.step for metric in self.client.get_metric_history(self.run_id, key)}

    def artifact_names(self, directory: str) -> set[str]:
        """The names of the run's artifacts in `directory`."""
        return {Path(item.path).name for item in self.client.list_artifacts(self.run_id, directory)}

    def stop_system_metrics(self) -> None:
        """Stop the system metrics (their last samples logged, as far as the store takes them)."""
        if self.system_metrics is not None:
            self.system_metrics.finish()
            self.system_metrics = None

    def finish(self, ok: bool) -> None:
        """Stop the system metrics and end the run."""
        self.stop_system_metrics()
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")
