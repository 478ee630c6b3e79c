"""`sagan params [--profile NAME]`: write params.yaml for a profile, or show how it differs from the paper."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write params.yaml for a profile (configs/), or show how it differs from the paper"
PARAM_KEYS = ()  # it writes or checks the params file itself
READS_PARAMS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="paper, or NAME for configs/NAME.yaml; writes the --params file")


def run(params: None, args: argparse.Namespace) -> None:
    from sagan.params import flatten, load_params
    from sagan.profiles import differences, write_profile

    out = Path(args.params)
    if args.profile:
        write_profile(args.profile, out)
    params = load_params(out)
    changed = differences(params)
    summary = ", ".join(f"{k}={v!r}" for k, (_, v) in changed.items()) or "none"
    print(f"sagan params: {out}: profile '{params.mlflow.profile}'; "
          f"{len(changed)} of {len(flatten(params))} keys differ from the paper: {summary}")
