"""The training stage's records: losses.csv and run.json (its MLflow run is tracking.MlflowRun)."""
from __future__ import annotations

import csv
from pathlib import Path

from sagan import paths
from sagan.atomic import atomic_path, write_json

# run_id: the MLflow run that wrote the table (the same on every row; run.json's mlflow_run_id).
LOSS_COLUMNS = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "gp", "gamma_g", "gamma_d", "img_per_s",
                "run_id")


def write_losses(rows: list[dict], run_id: str, path: Path = paths.LOSSES_CSV) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOSS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**{k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()},
                             "run_id": run_id})


def write_run_record(record: dict, path: Path = paths.RUN_RECORD) -> None:
    write_json(path, record)
