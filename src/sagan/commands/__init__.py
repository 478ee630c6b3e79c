"""The `sagan` commands: one module per command, the only code that reads the command line.

Each module has HELP, PARAM_KEYS (the params whose values change its outputs: both orchestrators
declare exactly these), optionally `add_arguments(parser)`, and `run(params, args)`, which picks
the run's outputs (the pipeline's or a study cell's) and passes them into the library. A command
module imports the library inside `run`, so that `sagan --help` imports no torch. The registry of
commands is `sagan.stages.COMMANDS`; the library never imports this package.
"""
from __future__ import annotations

import argparse


def add_cell_arguments(parser: argparse.ArgumentParser) -> None:
    """`--study S --cell C`: run one cell of a study instead of the paper's pipeline."""
    parser.add_argument("--study", help="a study: studies/STUDY/study.yaml; with --cell, run that cell of it")
    parser.add_argument("--cell", help="the study's cell to run (e.g. sagan-after3-seed0): the params file's "
                        "params, the study's base and the cell's axis values; writes under studies/STUDY/cells/CELL/")
