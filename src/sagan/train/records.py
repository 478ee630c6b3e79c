"""The training stage's tables: losses.csv and evals.csv (its run.json is sagan.run_record.RunRecord,
its MLflow run sagan.tracking.MlflowRun)."""
from __future__ import annotations

import csv
from pathlib import Path

from sagan.atomic import atomic_path

# run_id: the MLflow run that wrote the table (the same on every row; run.json's mlflow_run_id).
LOSS_COLUMNS = ("step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "gp", "gamma_g", "gamma_d", "img_per_s",
                "run_id")


def write_losses(rows: list[dict], run_id: str, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOSS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**{k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()},
                             "run_id": run_id})


# The evaluations during training (train.eval_every): sagan.metrics.measure's scores per step. The
# SWD levels depend on the image size: swd_32 and swd_16 at 32 px, swd_64 too at 64 px.
EVAL_COLUMNS = ("step", "fid", "kid_mean", "kid_std", "precision", "recall", "swd")


def write_evals(rows: list[dict], run_id: str, path: Path) -> None:
    """One row per evaluation (a header only when there was none), with the run's id on each."""
    levels = sorted({k for row in rows for k in row if k.startswith("swd_")}, key=lambda k: -int(k[4:]))
    columns = [*EVAL_COLUMNS, *levels, "n_gen", "run_id"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**{k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()},
                             "run_id": run_id})
