"""`sagan COMMAND [--params params.yaml]`: one console script, one subcommand per command.

Each command is a module of sagan.commands (the registry: sagan.stages.COMMANDS); this module
builds the parser from them, loads the params file and turns errors into one line.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from sagan.errors import SaganError, one_line
from sagan.params import DEFAULT_PARAMS, load_params
from sagan.stages import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        command = importlib.import_module(module_name)
        p = sub.add_parser(name, help=command.HELP, description=command.HELP)
        p.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: %(default)s)")
        if hasattr(command, "add_arguments"):
            command.add_arguments(p)
    return parser


def end_progress_bars() -> None:
    """Close the progress bars that an error left open (the training loop's, say), so that the
    error line starts on a line of its own, not at the end of a bar."""
    tqdm = sys.modules.get("tqdm")  # imported only by stages that draw bars
    for bar in list(getattr(tqdm.tqdm, "_instances", ())) if tqdm else ():  # made with the first bar
        bar.close()


def error(command: str, message: str) -> int:
    end_progress_bars()
    print(f"sagan {command}: error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = importlib.import_module(COMMANDS[args.command])
    try:
        params = load_params(args.params) if getattr(command, "READS_PARAMS", True) else None
        command.run(params, args)
    except SaganError as exc:
        return error(args.command, str(exc))
    except KeyboardInterrupt:
        end_progress_bars()
        print(f"sagan {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an MLflow store failing mid-run is the user's to fix, not a bug of ours
        if not type(exc).__module__.startswith("mlflow"):
            raise
        return error(args.command, f"MLflow: {type(exc).__name__}: {one_line(exc, limit=None)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
