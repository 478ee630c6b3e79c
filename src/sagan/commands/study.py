"""`sagan study --study NAME [--check | --dry]`, `sagan study --list`: a study's results,
statistics, figures and report, and its MLflow parent run; `--check` validates every cell's params
and writes them (the study's first DVC stage); `--dry` prints the cells; `--list` the studies."""
from __future__ import annotations

import argparse

from sagan.errors import SaganError
from sagan.params import Params

HELP = "a study's results, statistics, figures and report, and its MLflow parent run (studies/NAME/study.yaml)"
PARAM_KEYS = ("mlflow",)  # the cells' own params reach it through their outputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", help="a study: studies/STUDY/study.yaml")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="only validate the params file and the study (every "
                      "cell's params) and write each cell's params: the study's first DVC stage")
    what.add_argument("--dry", action="store_true", help="print the study's cells and the params each changes")
    what.add_argument("--list", action="store_true", help="print every study with its question and its cost in "
                      "trainings")


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.params import flatten
    from sagan.study.design import load_study, study_names, write_cell_params

    if args.list:
        for name in study_names():
            study = load_study(name, params)
            print(f"{name}: {len(study.variants)} variants x {len(study.seeds)} seeds = {len(study.cells)} "
                  f"trainings (and as many evaluations); baseline {study.baseline}\n  {study.question}")
        return
    if not args.study:
        raise SaganError("--study NAME is needed (or --list)", hint=f"studies: {', '.join(study_names())}")
    study = load_study(args.study, params)  # every cell's params validated
    if args.check:
        write_cell_params(study)
        print(f"sagan study: {study.file}: the params of its {len(study.cells)} cells are valid")
    elif args.dry:
        paper = flatten(params)
        print(f"sagan study: {study.name}: {study.question}")
        for cell in study.cells:
            changed = {k: v for k, v in flatten(cell.params).items() if v != paper[k]}
            print(f"  {cell.name}: " + (", ".join(f"{k}={v!r}" for k, v in changed.items()) or "params.yaml as it is"))
    else:
        from sagan.study.summary import summarise

        summarise(study)
