"""`sagan stages --write | --check`: the DVC files (dvc.yaml, studies/NAME/dvc.yaml) written from
the command registry (sagan.dvcfile), or checked against it."""
from __future__ import annotations

import argparse

from sagan.errors import SaganError
from sagan.params import Params

HELP = "write the DVC files from the commands' declarations, or check that they are current"
PARAM_KEYS = ()  # it reads the code and the studies; params.yaml only to validate their cells


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--write", action="store_true", help="write dvc.yaml and every studies/NAME/dvc.yaml")
    what.add_argument("--check", action="store_true", help="fail if a DVC file differs from what --write writes")


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.atomic import atomic_path
    from sagan.dvcfile import files

    written = files(params)
    stale = [path for path, text in written.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        if stale:
            raise SaganError(f"{', '.join(map(str, stale))}: not what the code declares",
                             hint="run `sagan stages --write` and commit the result")
        print("sagan stages: the DVC files are current")
        return
    for path, text in written.items():
        if path in stale:
            with atomic_path(path) as tmp:
                tmp.write_text(text)
    print(f"sagan stages: wrote {', '.join(map(str, stale)) or 'nothing (all current)'}")
