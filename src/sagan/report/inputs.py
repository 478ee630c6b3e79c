"""Read the upstream stage outputs the report is built from; a missing or bad one is one line.

Every error names the file and the stage that writes it, so the fix is obvious.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sagan import paths, tracking
from sagan.metrics import results

LOSS_KEYS = ("run_id", "epoch", "d_loss", "g_loss")
EVAL_KEYS = ("run_id", "step", "fid", "swd", "n_gen")
RUN_KEYS = ("mlflow_run_id", "git_commit", "data_fingerprint", "synthetic_data", "params")


@dataclass(frozen=True)
class ReportInputs:
    metrics: dict
    losses: pd.DataFrame
    evals: pd.DataFrame  # no rows with train.eval_every: 0
    first_sample: Path
    last_sample: Path
    run_record: dict


def _require_keys(obj: dict, keys: tuple[str, ...], path: Path) -> None:
    absent = [k for k in keys if k not in obj]
    if absent:
        raise paths.bad_input(path, f"lacks {', '.join(absent)}")


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(paths.require(path), dtype={"run_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise paths.bad_input(path, f"not a readable CSV ({str(exc).splitlines()[0]})") from exc
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise paths.bad_input(path, f"lacks columns {', '.join(absent)}")
    return table


def read_losses(path: Path = paths.LOSSES_CSV) -> pd.DataFrame:
    losses = _read_table(path, LOSS_KEYS)
    if losses.empty:
        raise paths.bad_input(path, "has no rows")
    return losses


def read_evals(path: Path = paths.EVALS_CSV) -> pd.DataFrame:
    """The evaluations during training: no rows with train.eval_every 0."""
    return _read_table(path, EVAL_KEYS)


def sample_grids(directory: Path = paths.SAMPLES_DIR) -> tuple[Path, Path]:
    """The first and the last epoch's sample grid (epoch_001.png sorts before epoch_010.png)."""
    grids = sorted(directory.glob("epoch_*.png"))
    if not grids:
        raise paths.bad_input(directory / "epoch_*.png", "no sample grids found")
    return grids[0], grids[-1]


def read_run_record(path: Path = paths.RUN_RECORD) -> dict:
    record = tracking.read_run_record(path)
    _require_keys(record, RUN_KEYS, path)
    return record


def check_one_run(run_record: dict, metrics: dict, losses: pd.DataFrame, evals: pd.DataFrame) -> None:
    """The report's inputs must come from one training run: a killed or failed run, or a generator
    evaluated before the newest run finished, must not put its numbers beside another run's."""
    run_id = run_record["mlflow_run_id"]
    for path, table in ((paths.LOSSES_CSV, losses), (paths.EVALS_CSV, evals)):
        runs = sorted(set(map(str, table["run_id"])))
        if runs not in ([run_id], []):  # evals.csv has no rows without train.eval_every
            raise paths.bad_input(path, f"is from run {', '.join(runs)}, but {paths.RUN_RECORD} is from run {run_id}")
    if metrics["run_id"] != run_id:
        raise paths.bad_input(paths.METRICS_PROTOCOL, f"measures run {metrics['run_id']}, but {paths.RUN_RECORD} is from "
                                             f"run {run_id}")


def read_inputs() -> ReportInputs:
    first, last = sample_grids()
    inputs = ReportInputs(metrics=results.read(), losses=read_losses(), evals=read_evals(), first_sample=first,
                          last_sample=last, run_record=read_run_record())
    check_one_run(inputs.run_record, inputs.metrics, inputs.losses, inputs.evals)
    return inputs
