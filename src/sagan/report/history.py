"""Run history: every run of the MLflow experiment as the comparison table of the MLflow UI."""
from __future__ import annotations

import math
from dataclasses import dataclass

from sagan import tracking
from sagan.errors import SaganError
from sagan.params import MlflowParams

# Names of the run-level metrics the table reads: what `sagan evaluate` (metrics.json's keys) and
# `sagan train` (sagan.tracking's names) log.
METRIC_FID = "fid"
METRIC_KID = "kid_mean"
METRIC_STEPS = tracking.METRIC_STEPS
METRIC_WALL_TIME = tracking.METRIC_WALL_TIME
METRIC_IMG_PER_S = tracking.METRIC_IMG_PER_S
# The names runs logged before the training summary moved under `train/`, read when a run has no
# value under the current name, so that older runs of a store keep their columns.
FORMER_NAMES = {METRIC_STEPS: "steps", METRIC_WALL_TIME: "train_wall_time_s", METRIC_IMG_PER_S: "mean_img_per_s"}

_PAGE = 1000


@dataclass(frozen=True)
class HistoryRow:
    run_id: str
    run_name: str
    params: dict[str, str]
    metrics: dict[str, float]

    @property
    def fid(self) -> float | None:
        value = self.metrics.get(METRIC_FID)
        return None if value is None or math.isnan(value) else value


@dataclass(frozen=True)
class History:
    experiment: str
    rows: list[HistoryRow]  # sorted by FID, runs without FID last
    differing_params: list[str]  # the logged params whose values are not the same in every row
    total_runs: int  # in the experiment, before `max_runs` cut the table


def sort_by_fid(rows: list[HistoryRow]) -> list[HistoryRow]:
    """Lowest FID first (lower is better); runs without FID last; ties in a stable, named order."""
    return sorted(rows, key=lambda r: (r.fid is None, r.fid or 0.0, r.run_name, r.run_id))


def differing_params(rows: list[HistoryRow]) -> list[str]:
    """Param keys whose value differs between rows; a param a run did not log counts as a value."""
    keys = sorted({key for row in rows for key in row.params})
    return [key for key in keys if len({row.params.get(key) for row in rows}) > 1]


def current_names(metrics: dict[str, float]) -> dict[str, float]:
    """A run's metrics with each FORMER_NAMES value also under its current name, unless it has one."""
    return {**{name: metrics[old] for name, old in FORMER_NAMES.items() if old in metrics}, **metrics}


def fetch_rows(mlflow_params: MlflowParams) -> list[HistoryRow]:
    client = tracking.client(mlflow_params)
    experiment = client.get_experiment_by_name(mlflow_params.experiment)
    if experiment is None:
        raise SaganError(f"MLflow experiment '{mlflow_params.experiment}' (mlflow.experiment) not found in "
                         f"{tracking.shown_uri(mlflow_params)}",
                         hint="run `sagan train` against this tracking store")
    rows, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=_PAGE, page_token=token)
        rows += [HistoryRow(run_id=run.info.run_id, run_name=run.info.run_name or run.info.run_id,
                            params=dict(run.data.params), metrics=current_names(run.data.metrics)) for run in page]
        token = page.token
        if not token:
            return rows


def build_history(mlflow_params: MlflowParams, max_runs: int) -> History:
    rows = fetch_rows(mlflow_params)
    shown = sort_by_fid(rows)[:max_runs]
    return History(experiment=mlflow_params.experiment, rows=shown, differing_params=differing_params(shown),
                   total_runs=len(rows))
