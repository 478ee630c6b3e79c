"""`sagan study --study NAME [--check]`: a study's results, statistics, figure and report, and
its MLflow parent run; `--check` validates every cell's params and writes the study's stamp."""
from __future__ import annotations

import argparse

from sagan.params import Params

HELP = "a study's results, statistics, figure and report, and its MLflow parent run (studies/NAME/study.yaml)"
PARAM_KEYS = ("mlflow",)  # the cells' own params reach it through their outputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="a study: studies/STUDY/study.yaml")
    parser.add_argument("--check", action="store_true", help="only validate the params file and the study (every "
                        "cell's params) and write its stamp: the study's first DVC stage")


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.study.design import load_study
    from sagan.study.summary import summarise, write_check_stamp

    study = load_study(args.study, params)  # every cell's params validated
    if args.check:
        write_check_stamp(study)
    else:
        summarise(study)
