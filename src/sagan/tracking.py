"""MLflow plumbing shared by train, evaluate and report.

`train` opens one MLflow run per training run and records its id in reports/train/run.json;
the later stages log into that same run through `logging_into_training_run()`.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

from sagan import paths
from sagan.errors import SaganError
from sagan.params import MlflowParams


def tracking_uri(p: MlflowParams) -> str:
    """MLFLOW_TRACKING_URI wins (a shared server); else the params' URI."""
    return os.environ.get("MLFLOW_TRACKING_URI") or p.tracking_uri


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


def setup(p: MlflowParams):
    """Point mlflow at the store and return the module (imported lazily: it is slow to import)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(p))
    return mlflow


def read_run_record(path: Path = paths.RUN_RECORD) -> dict:
    if not Path(path).is_file():
        raise SaganError(f"{path}: training run record not found", hint="run `sagan train` first")
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise SaganError(f"{path}: not valid JSON ({exc})") from exc


@contextlib.contextmanager
def logging_into_training_run(p: MlflowParams, record_path: Path = paths.RUN_RECORD):
    """Resume the training stage's MLflow run (id from run.json) and yield the mlflow module."""
    record = read_run_record(record_path)
    run_id = record.get("mlflow_run_id")
    if not run_id:
        raise SaganError(f"{record_path}: has no 'mlflow_run_id'", hint="rerun `sagan train`")
    mlflow = setup(p)
    try:  # look the run up first, so that errors while logging are not mistaken for a missing run
        mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise SaganError(f"MLflow run {run_id} from {record_path} is not in {tracking_uri(p)}: "
                         f"{str(exc).splitlines()[0]}", hint="rerun `sagan train` against this store") from exc
    with mlflow.start_run(run_id=run_id):
        yield mlflow


def ensure_store(p: MlflowParams) -> None:
    """Create the store's schema now, so parallel jobs never race to create it ("database is locked")."""
    setup(p).MlflowClient().search_experiments(max_results=1)


if __name__ == "__main__":  # python -m sagan.tracking --params params.yaml (the Snakefile's onstart)
    import argparse

    from sagan.params import load_params

    parser = argparse.ArgumentParser(description="create the MLflow store named by the params")
    parser.add_argument("--params", default="params.yaml")
    ensure_store(load_params(parser.parse_args().params).mlflow)
