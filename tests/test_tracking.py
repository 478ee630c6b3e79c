"""MLflow plumbing: later stages log into the training run named by run.json, through the client; the
store opens safely under concurrency or fails in one line; recorded URLs carry no secrets."""
import dataclasses
import json
import multiprocessing

import mlflow
import pytest

from sagan.errors import SaganError
from sagan.params import DataParams, MlflowParams, Params, flatten
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
    record.write_text(json.dumps({"mlflow_run_id": run_id}))
    MlflowRun.from_run_record(p, record).log_metrics({"fid": 12.5})
    assert mlflow.MlflowClient(p.tracking_uri).get_run(run_id).data.metrics == {"fid": 12.5}
    assert mlflow.active_run() is None  # no fluent, process-global run was started


def test_a_run_missing_from_the_store_is_one_clear_line(store):
    p, _, record = store
    record.write_text(json.dumps({"mlflow_run_id": "0" * 32}))
    with pytest.raises(SaganError, match=f"MLflow run 0{{32}} from {record} is not in sqlite:///"):
        MlflowRun.from_run_record(p, record)


def test_errors_while_logging_are_not_reported_as_a_missing_run(store):
    p, run_id, record = store
    record.write_text(json.dumps({"mlflow_run_id": run_id}))
    run = MlflowRun.from_run_record(p, record)
    with pytest.raises(mlflow.exceptions.MlflowException, match="Invalid value"):
        run.log_metrics({"bad name!": 1.0})


def test_missing_run_record_names_the_file(tmp_path):
    with pytest.raises(SaganError, match="run.json: not found"):
        MlflowRun.from_run_record(MlflowParams(), tmp_path / "run.json")


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
    """MLflow 3's UI opens an untagged experiment on its GenAI overview; the Source column reads
    mlflow.source.*. An experiment made before the tag gets it on the next run."""
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
