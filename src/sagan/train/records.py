"""The training stage's records: losses.csv, run.json and its MLflow run.

MLflow is touched only at log points, epoch ends and the end of the run, never per step.
"""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

from sagan import paths, tracking
from sagan.atomic import atomic_path, write_json
from sagan.params import MlflowParams

LOSS_COLUMNS = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "gp", "gamma_g", "gamma_d", "img_per_s")
_MLFLOW_BATCH = 100  # MLflow's limit on params per log_batch call


def write_losses(rows: list[dict], path: Path = paths.LOSSES_CSV) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOSS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})


def write_run_record(record: dict, path: Path = paths.RUN_RECORD) -> None:
    write_json(path, record)


class MlflowRun:
    """One MLflow run per training run; a resumed training run reopens the same run id."""

    def __init__(self, p: MlflowParams, run_id: str | None, tags: dict[str, str], params: dict):
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        mlflow = tracking.setup(p)
        self.client = mlflow.MlflowClient()
        if run_id:
            try:
                self.client.get_run(run_id)
                self.client.update_run(run_id, status="RUNNING")
            except MlflowException:
                print(f"sagan train: MLflow run {run_id} from the checkpoint is not in {tracking.tracking_uri(p)}; "
                      "starting a new MLflow run")
                run_id = None
        if not run_id:
            found = self.client.get_experiment_by_name(p.experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(p.experiment)
            run_id = self.client.create_run(experiment_id, tags=tags).info.run_id
            items = [Param(k, str(v)) for k, v in params.items()]
            for i in range(0, len(items), _MLFLOW_BATCH):
                self.client.log_batch(run_id, params=items[i:i + _MLFLOW_BATCH])
        self.run_id = run_id

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)  # the MLflow store is not a hashed output
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()
                                                    if not math.isnan(v)])

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")
