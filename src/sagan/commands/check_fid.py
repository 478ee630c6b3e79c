"""`sagan check-fid [--baseline FILE] [--update]`: the FID regression gate that CI runs."""
from __future__ import annotations

import argparse
from pathlib import Path

from sagan import paths
from sagan.params import Params

HELP = "fail if FID regressed against tests/baselines/"
PARAM_KEYS = ()  # it reads the metrics files and the baseline, not params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", default="tests/baselines/smoke.json")
    parser.add_argument("--update", action="store_true", help="write the current FID as the new baseline")


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.metrics.gate import check

    check(params, paths.RUN, Path(args.baseline), args.update)
