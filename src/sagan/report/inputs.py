"""Read the upstream stage outputs the report is built from; a missing or bad one is one line.

Every error names the file and the stage that writes it, so the fix is obvious.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sagan import paths
from sagan.errors import one_line
from sagan.metrics.results import Evaluation
from sagan.run_record import RunRecord

LOSS_KEYS = ("run_id", "epoch", "d_loss", "g_loss")
EVAL_KEYS = ("run_id", "step", "fid", "swd", "n_gen")


@dataclass(frozen=True)
class ReportInputs:
    evaluation: Evaluation
    losses: pd.DataFrame
    evals: pd.DataFrame  # no rows with train.eval_every: 0
    first_sample: Path
    last_sample: Path
    run_record: RunRecord


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(paths.require(path), dtype={"run_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise paths.bad_input(path, f"not a readable CSV ({one_line(exc, limit=None)})") from exc
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise paths.bad_input(path, f"lacks columns {', '.join(absent)}")
    return table


def read_losses(path: Path) -> pd.DataFrame:
    losses = _read_table(path, LOSS_KEYS)
    if losses.empty:
        raise paths.bad_input(path, "has no rows")
    return losses


def read_evals(path: Path) -> pd.DataFrame:
    """The evaluations during training: no rows with train.eval_every 0."""
    return _read_table(path, EVAL_KEYS)


def sample_grids(directory: Path) -> tuple[Path, Path]:
    """The first and the last epoch's sample grid (epoch_001.png sorts before epoch_010.png)."""
    grids = sorted(directory.glob("epoch_*.png"))
    if not grids:
        raise paths.bad_input(directory / "epoch_*.png", "no sample grids found")
    return grids[0], grids[-1]


def check_one_run(inputs: ReportInputs, outputs: paths.RunOutputs) -> None:
    """The report's inputs must come from one training run: a killed or failed run, or a generator
    evaluated before the newest run finished, must not put its numbers beside another run's."""
    run_id = inputs.run_record.mlflow_run_id
    for path, table in ((outputs.losses_csv, inputs.losses), (outputs.evals_csv, inputs.evals)):
        runs = sorted(set(map(str, table["run_id"])))
        if runs not in ([run_id], []):  # evals.csv has no rows without train.eval_every
            raise paths.bad_input(path, f"is from run {', '.join(runs)}, but {outputs.run_record} is from run {run_id}")
    inputs.evaluation.check_run(inputs.run_record, outputs)


def read_inputs(outputs: paths.RunOutputs) -> ReportInputs:
    """The report's inputs among the outputs of one training run and its evaluation."""
    first, last = sample_grids(outputs.samples_dir)
    inputs = ReportInputs(evaluation=Evaluation.read(outputs), losses=read_losses(outputs.losses_csv),
                          evals=read_evals(outputs.evals_csv), first_sample=first, last_sample=last,
                          run_record=RunRecord.read(outputs.run_record))
    check_one_run(inputs, outputs)
    return inputs
