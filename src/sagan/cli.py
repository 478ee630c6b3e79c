"""`sagan STAGE [--params params.yaml]`: one console script, one subcommand per pipeline stage.

Each stage lives in its own module and exposes `run(params, args)`. Modules are imported only
when their stage runs, so `sagan --help` and the light stages stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from sagan.errors import SaganError
from sagan.params import DEFAULT_PARAMS, load_params

# subcommand -> (module, help). The pipeline stages come first, in graph order.
COMMANDS = {
    "download": ("sagan.data.download", "fetch CelebA (or write synthetic CelebA) into data/raw/"),
    "prepare": ("sagan.data.prepare", "crop/resize the raw zip into uint8 shards + manifest"),
    "split": ("sagan.data.split", "random train/val split of the manifest"),
    "fid-ref": ("sagan.fid.reference", "Inception statistics of the reference images"),
    "train": ("sagan.train.loop", "train SAGAN; resumes from models/checkpoints/"),
    "evaluate": ("sagan.fid.evaluate", "FID (and KID) of models/generator.pt"),
    "report": ("sagan.report.build", "Table 1, figures and run history as md + html"),
    "sample": ("sagan.model.sample", "draw a sample grid from models/generator.pt"),
    "check-fid": ("sagan.regression", "fail if FID regressed against tests/baselines/"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: %(default)s)")
        if name == "sample":
            p.add_argument("--n", type=int, default=64, help="number of images (default: %(default)s)")
            p.add_argument("--out", default="samples.png", help="output PNG (default: %(default)s)")
            p.add_argument("--seed", type=int, default=0, help="latent seed (default: %(default)s)")
            p.add_argument("--generator", default=None, help="generator file (default: models/generator.pt)")
        if name == "check-fid":
            p.add_argument("--baseline", default="tests/baselines/smoke.json")
            p.add_argument("--update", action="store_true", help="write the current FID as the new baseline")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name = COMMANDS[args.command][0]
    try:
        params = load_params(args.params)
        importlib.import_module(module_name).run(params, args)
    except SaganError as exc:
        print(f"sagan {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sagan {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
