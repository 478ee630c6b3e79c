"""MLflow plumbing: later stages log into the training run named by run.json, through the client; the
store opens safely under concurrency or fails in one line; recorded URLs carry no secrets."""
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import threading
import time
from types import SimpleNamespace

import mlflow
import pytest

from helpers import run_record
from sagan.errors import SaganError
from sagan.metrics.results import Evaluation
from sagan.params import DataParams, MlflowParams, Params, ReportParams, flatten
from sagan.run_record import RunRecord
from sagan.tracking import MlflowRun, client, run_metadata, run_tags, tracking_uri


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    p = MlflowParams(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="t")
    client = mlflow.MlflowClient(p.tracking_uri)
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    return p, run_id, tmp_path / "run.json"


def test_logs_into_the_recorded_run(store):
    p, run_id, record = store
    MlflowRun.from_run_record(p, run_record(run_id), record).log_metrics({"fid": 12.5})
    assert mlflow.MlflowClient(p.tracking_uri).get_run(run_id).data.metrics == {"fid": 12.5}
    assert mlflow.active_run() is None  # no fluent, process-global run was started


def test_a_run_missing_from_the_store_is_one_clear_line(store):
    p, _, record = store
    with pytest.raises(SaganError, match=f"MLflow run 0{{32}} from {record} is not in sqlite:///"):
        MlflowRun.from_run_record(p, run_record("0" * 32), record)


def test_errors_while_logging_are_not_reported_as_a_missing_run(store):
    p, run_id, record = store
    run = MlflowRun.from_run_record(p, run_record(run_id), record)
    with pytest.raises(mlflow.exceptions.MlflowException, match="Invalid value"):
        run.log_metrics({"bad name!": 1.0})


def test_missing_run_record_names_the_file(tmp_path):
    with pytest.raises(SaganError, match="run.json: not found"):
        RunRecord.read(tmp_path / "run.json")


def test_a_run_record_reads_back_as_written_and_a_bad_field_is_one_line(tmp_path):
    path = tmp_path / "run.json"
    record = run_record("abc", best_step=40, best_fid=12.5)
    record.write(path)
    assert RunRecord.read(path) == record
    assert "study" not in json.loads(path.read_text())  # the pipeline's run is no study's cell
    cell = dataclasses.replace(record, study={"name": "attention", "cell": "none-seed0", "attention": "none",
                                              "placement": None, "seed": 0})
    cell.write(path)
    assert RunRecord.read(path) == cell
    written = json.loads(path.read_text())
    path.write_text(json.dumps({**written, "wall_time_s": 25}))  # a whole number is a number
    assert RunRecord.read(path).wall_time_s == 25
    for change, problem in [
        ({"steps": "ten"}, "'steps' is 'ten', not an integer"),
        ({"synthetic_data": 1}, "'synthetic_data' is 1, not true or false"),
        ({"best_fid": "n/a"}, "'best_fid' is 'n/a', not a number or null"),
        ({"params": None}, "'params' is None, not an object"),
        ({"mlflow_run_id": ""}, "has no 'mlflow_run_id'"),
    ]:
        path.write_text(json.dumps({**written, **change}))
        with pytest.raises(SaganError) as exc:
            RunRecord.read(path)
        assert str(exc.value) == f"{path}: {problem}"
    path.write_text(json.dumps({key: value for key, value in written.items() if key not in ("steps", "params")}))
    with pytest.raises(SaganError) as exc:
        RunRecord.read(path)
    assert str(exc.value) == f"{path}: missing 'steps', 'params'"


def _open_store(uri: str, barrier, results) -> None:
    barrier.wait()  # every process opens the new store at the same moment
    try:
        client(MlflowParams(tracking_uri=uri))
        results.put("ok")
    except Exception as exc:  # what the user would see instead of a result
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path, monkeypatch):
    """Without the creation lock, two of three processes failed creating the tables ("table ...
    already exists", alembic "expected to match one row")."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = multiprocessing.get_context("fork")  # mlflow is already imported: cheap children
    barrier, results = ctx.Barrier(3), ctx.Queue()
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [ctx.Process(target=_open_store, args=(uri, barrier, results)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [results.get(timeout=1) for _ in procs] == ["ok"] * 3


def test_an_unusable_tracking_uri_is_one_line_naming_the_param(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SaganError) as err:
        client(MlflowParams(tracking_uri="bogus://host/store"))
    assert str(err.value).startswith("mlflow.tracking_uri: cannot open the MLflow store bogus://host/store (")
    assert "\n" not in str(err.value)


def test_secrets_in_recorded_urls_are_redacted(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cret@mlflow.example/?token=abc")
    params = Params(data=DataParams(urls={"zip": "https://u:pw@bucket.example/celeba.zip?X-Amz-Signature=abc",
                                          "partition": "https://mirror.example/list_eval_partition.txt"}))
    flat = flatten(params)
    assert flat["data.urls.zip"] == "https://bucket.example/celeba.zip?<redacted>"
    assert flat["data.urls.partition"] == "https://mirror.example/list_eval_partition.txt"  # nothing to hide
    metadata = run_metadata(params.mlflow, "f" * 64, synthetic_data=True)
    assert metadata["tracking_uri"] == "https://mlflow.example/?<redacted>"
    assert "s3cret" not in json.dumps([flat, metadata]) and "abc" not in json.dumps([flat, metadata])


def test_text_around_a_url_is_recorded_as_written():
    """Only the URL inside a param is redacted: a title that mentions one keeps its words and case."""
    title = "Results: see https://u:pw@x.example/p?token=1 and [x](javascript:alert(1))"
    params = Params(report=ReportParams(title=title))
    assert flatten(params)["report.title"] == (
        "Results: see https://x.example/p?<redacted> and [x](javascript:alert(1))")
    assert flatten(Params(report=ReportParams(title="Plain words: no link")))["report.title"] == "Plain words: no link"


@pytest.mark.parametrize("configured,expected", [
    ("sqlite:///mlflow.db", "sqlite:////home/u/project/mlflow.db"),      # relative: the project's store
    ("sqlite:///stores/a.db", "sqlite:////home/u/project/stores/a.db"),
    ("sqlite:////srv/mlflow.db", "sqlite:////srv/mlflow.db"),             # absolute: as given
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_a_relative_store_is_the_dvc_projects_even_from_a_queued_experiments_copy(monkeypatch, configured, expected):
    """A queued `dvc exp run` runs its stages in .dvc/tmp/exps/...; DVC_ROOT names the project."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", "/home/u/project")
    params = MlflowParams(tracking_uri=configured)
    assert tracking_uri(params) == expected
    assert run_metadata(params, "f" * 64, synthetic_data=True)["tracking_uri"] == configured  # as configured
    monkeypatch.delenv("DVC_ROOT")
    assert tracking_uri(params) == configured  # Snakemake or by hand: the working directory's


def test_a_dvc_experiments_run_is_named_and_tagged_after_it(store, monkeypatch):
    p, _, _ = store
    monkeypatch.setenv("DVC_EXP_NAME", "rabid-plop")
    metadata = run_metadata(p, "f" * 64, synthetic_data=True)
    run = MlflowRun.start_or_resume(p, None, run_tags(metadata), {"train.lr_d": 1e-4})
    info = mlflow.MlflowClient(p.tracking_uri).get_run(run.run_id)
    assert (info.info.run_name, info.data.tags["sagan.dvc_experiment"]) == ("rabid-plop", "rabid-plop")
    monkeypatch.delenv("DVC_EXP_NAME")
    assert "sagan.dvc_experiment" not in run_tags(run_metadata(p, "f" * 64, synthetic_data=True))


def test_experiments_open_on_model_training_and_runs_name_their_source(store):
    """The experiment says it is model training (MLflow 3.17's UI goes by its own GenAI / Model
    training switch instead: tests/test_mlflow_ui.py); the Source column reads mlflow.source.*. An
    experiment made before the tag gets it on the next run."""
    p, _, _ = store  # experiment "t" exists, untagged
    client = mlflow.MlflowClient(p.tracking_uri)
    assert "mlflow.experimentKind" not in client.get_experiment_by_name("t").tags
    run = MlflowRun.start_or_resume(p, None, run_tags(run_metadata(p, "f" * 64, synthetic_data=True)), {})
    assert client.get_experiment_by_name("t").tags["mlflow.experimentKind"] == "custom_model_development"
    new = dataclasses.replace(p, experiment="new")
    MlflowRun.start_or_resume(new, None, {}, {})
    assert client.get_experiment_by_name("new").tags["mlflow.experimentKind"] == "custom_model_development"
    tags = client.get_run(run.run_id).data.tags
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("sagan train", "LOCAL")
    assert tags["mlflow.source.git.commit"] == tags["sagan.git_commit"]


# -- what the MLflow UI's runs table shows: the data, the source, grouped metrics, system metrics ----
@pytest.fixture
def shared_store(mlflow_uri, tmp_path, monkeypatch, request):
    """`store`, as a new experiment of the session's store (creating a store takes seconds)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    p = MlflowParams(tracking_uri=mlflow_uri, experiment=f"test_tracking.{request.node.name}")
    client = mlflow.MlflowClient(mlflow_uri)
    run_id = client.create_run(client.create_experiment(p.experiment)).info.run_id
    return p, run_id, tmp_path / "run.json"


def test_a_training_run_records_its_data_and_grouped_metrics_and_a_continued_run_adds_no_input(train_project):
    """The Dataset column reads the run's `training` input; the losses of every log point are
    `train/...`; continuing the run (more steps, the same MLflow run) logs its data once."""
    import csv

    from helpers import tiny_params, train
    from sagan import paths
    from sagan.report import history

    train(tiny_params(max_steps=4))
    first = json.loads(paths.RUN.run_record.read_text())
    train(tiny_params(max_steps=8))
    record = json.loads(paths.RUN.run_record.read_text())
    assert record["mlflow_run_id"] == first["mlflow_run_id"]  # continued, not a new run

    client = mlflow.MlflowClient(record["tracking_uri"])
    run = client.get_run(record["mlflow_run_id"])
    (data,) = run.inputs.dataset_inputs
    fingerprint = hashlib.sha256(paths.MANIFEST.read_bytes()).hexdigest()  # docs/contracts.md: DatasetInfo
    assert [(t.key, t.value) for t in data.tags] == [("mlflow.data.context", "training")]
    assert (data.dataset.name, data.dataset.digest) == ("synthetic CelebA", fingerprint[:8])
    assert json.loads(data.dataset.source) == {"uri": "data/prepared"}
    profile = json.loads(data.dataset.profile)
    assert profile["fingerprint"] == run.data.tags["sagan.data_fingerprint"] == fingerprint
    assert (profile["n_train"], profile["n_val"], profile["size"], profile["synthetic_data"]) == (128, 32, 32, True)
    assert '"shape": [-1, 32, 32, 3]' in json.loads(data.dataset.schema)["mlflow_tensorspec"]["features"]

    with open(paths.RUN.losses_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    d_loss = client.get_metric_history(run.info.run_id, "train/d_loss")
    assert [(m.step, m.value) for m in d_loss] == [(int(r["step"]), pytest.approx(float(r["d_loss"]))) for r in rows]
    assert [m.step for m in d_loss] == [4, 8]
    assert not {"d_loss", "g_loss", "steps", "train_wall_time_s"} & set(run.data.metrics)  # no ungrouped names
    assert {f"train/{column}" for column in rows[0] if column not in ("step", "run_id")} <= set(run.data.metrics)
    assert run.data.metrics["train/steps"] == 8 and run.data.metrics["train/wall_time_s"] > 0
    # the report's run-history table reads these names
    (row,) = [r for r in history.fetch_rows(tiny_params().mlflow) if r.run_id == run.info.run_id]
    assert (row.metrics[history.METRIC_STEPS], row.metrics[history.METRIC_IMG_PER_S]) == \
        (8, pytest.approx(record["img_per_s"]))


def test_an_evaluation_records_the_fid_reference_once(shared_store, tmp_path):
    p, run_id, record = shared_store
    reference = tmp_path / "reference.npz"
    reference.write_bytes(b"reference statistics" * 1000)
    evaluation = Evaluation.from_dict({
        "fid": 12.5, "n_gen": 50000, "n_ref": 40000, "wall_time_s": 60.0, "floor": {"fid": 2.0},
        "ceiling": {"fid": 300.0}, "run_id": run_id, "generator": "last", "reference_split": "val",
        "extractor": "inception", "weights_sha256": "ab" * 32, "weights_kind": "official", "preprocessing": {},
        "synthetic_data": False, "metric_protocols": {}})
    for fid in (12.5, 12.0):  # evaluate run twice against the same reference
        MlflowRun.from_run_record(p, run_record(run_id), record).log_evaluation({"fid": fid}, reference, evaluation)
    run = mlflow.MlflowClient(p.tracking_uri).get_run(run_id)
    (data,) = run.inputs.dataset_inputs
    sha256 = hashlib.sha256(reference.read_bytes()).hexdigest()
    assert (data.dataset.name, data.dataset.digest, json.loads(data.dataset.profile)["sha256"]) == \
        ("CelebA FID reference (val)", sha256[:8], sha256)
    assert [(t.key, t.value) for t in data.tags] == [("mlflow.data.context", "evaluation")]
    assert json.loads(data.dataset.source) == {"uri": str(reference)}
    assert run.data.metrics == {"fid": 12.0}


def test_system_metrics_are_logged_only_when_switched_on(shared_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    p, _, _ = shared_store
    client = mlflow.MlflowClient(p.tracking_uri)
    for switched_on in (False, True):
        run = MlflowRun.start_or_resume(dataclasses.replace(p, system_metrics=switched_on), None, {}, {})
        time.sleep(0.5)
        run.finish(ok=True)
        logged = {key for key in client.get_run(run.run_id).data.metrics if key.startswith("system/")}
        assert ({"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= logged) is switched_on
        assert not logged or switched_on
    assert "SystemMetricsMonitor" not in {thread.name for thread in threading.enumerate()}  # stopped by finish


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_runs_name_the_commit_they_were_trained_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    for args in (["init", "-q", "-b", "main"], ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q",
                                                 "--allow-empty", "-m", "first"]):
        subprocess.run(["git", *args], check=True, env=env)
    head = (tmp_path / ".git/refs/heads/main").read_text().strip()  # read without git
    tags = run_tags(run_metadata(MlflowParams(), "f" * 64, synthetic_data=True))
    assert len(head) == 40 and tags["mlflow.source.git.commit"] == tags["sagan.git_commit"] == head
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("sagan train", "LOCAL")


def test_a_dataset_two_runs_log_at_once_is_linked_on_a_second_try():
    """The server's race on inserting one new dataset for two runs (UNIQUE constraint) is retried;
    any other refusal is raised."""
    class Client:
        def __init__(self, refusals):
            self.refusals, self.logged = list(refusals), []

        def get_run(self, run_id):
            return SimpleNamespace(inputs=SimpleNamespace(dataset_inputs=[]))

        def log_inputs(self, run_id, datasets):
            if self.refusals:
                raise SaganError(self.refusals.pop(0))
            self.logged.append((run_id, datasets))

    dataset = SimpleNamespace(dataset=SimpleNamespace(name="reference", digest="abc"), tags=[])
    race = Client(["MLflow: RestException: BAD_REQUEST: (sqlite3.IntegrityError) UNIQUE constraint failed: "
                   "datasets.experiment_id, datasets.name, datasets.digest"])
    MlflowRun(race, "run1").log_dataset(dataset)
    assert race.logged == [("run1", [dataset])]
    refused = Client(["MLflow: RestException: PERMISSION_DENIED"])
    with pytest.raises(SaganError, match="PERMISSION_DENIED"):
        MlflowRun(refused, "run1").log_dataset(dataset)
    assert refused.logged == []
