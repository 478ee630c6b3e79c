"""`sagan train [--study S --cell C]`: train SAGAN for the pipeline or one study cell; resumes."""
from __future__ import annotations

import argparse

from sagan import paths
from sagan.commands import add_cell_arguments
from sagan.errors import SaganError
from sagan.params import Params

HELP = f"train SAGAN; resumes from {paths.RUN.checkpoints_dir}/"
# The fid keys: the evaluations during training (train.eval_every) score against the reference.
# (The MLflow run also logs every other param, for the run-history table; no output depends on them.)
PARAM_KEYS = ("model", "train", "mlflow", "fid.weights", "fid.reference_split", "fid.reference_max_images")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cell_arguments(parser)


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.study.design import resolve_cell
    from sagan.train import dist
    from sagan.train.loop import train

    cell = resolve_cell(params, args.study, args.cell)
    if cell:
        params = cell.params
    # With train.nproc_per_node > 1 this process starts the ranks, each running this command again.
    argv = ["train", "--params", args.params] + (["--study", cell.study, "--cell", cell.name] if cell else [])
    status = dist.launch_ranks(params.train.nproc_per_node, argv)
    if status is not None:
        if status:
            raise SaganError(f"train.nproc_per_node: the {params.train.nproc_per_node} ranks failed "
                             f"(exit status {status}); their errors are above")
        return
    if cell:
        train(params, cell.outputs, study=cell.record, tags=cell.tags)
    else:
        train(params, paths.RUN)
