"""Later stages log into the training run named by reports/train/run.json."""
import json

import mlflow
import pytest

from sagan.errors import SaganError
from sagan.params import MlflowParams
from sagan.tracking import logging_into_training_run


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
    with logging_into_training_run(p, record) as ml:
        ml.log_metric("fid", 12.5)
    assert mlflow.MlflowClient(p.tracking_uri).get_run(run_id).data.metrics == {"fid": 12.5}


def test_a_run_missing_from_the_store_is_one_clear_line(store):
    p, _, record = store
    record.write_text(json.dumps({"mlflow_run_id": "0" * 32}))
    with pytest.raises(SaganError, match=f"MLflow run 0{{32}} from {record} is not in sqlite:///"):
        with logging_into_training_run(p, record):
            pass


def test_errors_while_logging_are_not_reported_as_a_missing_run(store):
    p, run_id, record = store
    record.write_text(json.dumps({"mlflow_run_id": run_id}))
    with pytest.raises(mlflow.exceptions.MlflowException):
        with logging_into_training_run(p, record):
            raise mlflow.exceptions.MlflowException("artifact store unreachable")


def test_missing_run_record_names_the_file(tmp_path):
    with pytest.raises(SaganError, match="run.json: training run record not found"):
        with logging_into_training_run(MlflowParams(), tmp_path / "run.json"):
            pass
