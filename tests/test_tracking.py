"""Later stages log into the training run named by reports/train/run.json, through the client."""
import json

import mlflow
import pytest

from sagan.errors import SaganError
from sagan.params import MlflowParams
from sagan.tracking import MlflowRun


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
