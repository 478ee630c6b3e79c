"""`sagan STAGE [--params params.yaml]`: one console script, one subcommand per pipeline stage.

Each stage lives in its own module and exposes `run(params, args)`. Modules are imported only
when their stage runs, so `sagan --help` and the light stages stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple

from sagan import paths
from sagan.errors import SaganError, first_line
from sagan.params import DEFAULT_PARAMS, load_params

class Command(NamedTuple):
    module: str
    help: str
    reads_params: bool = True  # False: the command writes or checks the params file itself


# The pipeline stages come first, in graph order.
COMMANDS = {
    "download": Command("sagan.data.download", f"fetch CelebA (or write synthetic CelebA) into {paths.RAW_DIR}/"),
    "prepare": Command("sagan.data.prepare", "crop/resize the raw zip into uint8 shards + manifest"),
    "split": Command("sagan.data.split", "random train/val split of the manifest"),
    "fid-ref": Command("sagan.metrics.reference", "Inception statistics of the reference images"),
    "fid-bounds": Command("sagan.metrics.bounds", "every metric's floor (training images) and ceiling (untrained "
                          "generator)"),
    "train": Command("sagan.train.loop", f"train SAGAN; resumes from {paths.CHECKPOINTS_DIR}/"),
    "evaluate": Command("sagan.metrics.evaluate", f"FID, KID, precision/recall and SWD of {paths.GENERATOR}"),
    "report": Command("sagan.report.build", "Table 1, figures and run history as md + html"),
    "study": Command("sagan.study.summary", "a study's results, statistics, figure and report, and its MLflow "
                     "parent run (studies/NAME/study.yaml)"),
    "sample": Command("sagan.model.sample", f"draw a sample grid from {paths.GENERATOR} or an MLflow model"),
    "check-fid": Command("sagan.metrics.gate", "fail if FID regressed against tests/baselines/"),
    "params": Command("sagan.profiles", "write params.yaml for a profile (configs/), or show how it "
                      "differs from the paper", reads_params=False),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        p.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: %(default)s)")
        if name in ("train", "evaluate", "study"):
            p.add_argument("--study", required=name == "study", help="a study: studies/STUDY/study.yaml"
                           + ("" if name == "study" else "; with --cell, run that cell of it"))
        if name == "study":
            p.add_argument("--check", action="store_true", help="only validate the params file and the study (every "
                           "cell's params) and write its stamp: the study's first DVC stage")
        if name in ("train", "evaluate"):
            p.add_argument("--cell", help="the study's cell to run (e.g. sagan-after3-seed0): the params file's "
                           "params, the study's base and the cell's axis values; writes under "
                           "studies/STUDY/cells/CELL/")
        if name == "sample":
            p.add_argument("--n", type=int, default=64, help="number of images (default: %(default)s)")
            p.add_argument("--out", default="samples.png", help="output PNG (default: %(default)s)")
            p.add_argument("--seed", type=int, default=0, help="latent seed (default: %(default)s)")
            source = p.add_mutually_exclusive_group()
            source.add_argument("--generator", default=None, help=f"generator file (default: {paths.GENERATOR})")
            source.add_argument("--model-uri", default=None, help="an MLflow model instead: models:/NAME/VERSION "
                                "or runs:/RUN_ID/generator, in the params' MLflow store")
        if name == "check-fid":
            p.add_argument("--baseline", default="tests/baselines/smoke.json")
            p.add_argument("--update", action="store_true", help="write the current FID as the new baseline")
        if name == "params":
            p.add_argument("--profile", help="paper, or NAME for configs/NAME.yaml; writes the --params file")
    return parser


def study_cell(params, args: argparse.Namespace):
    """The params of `--study S --cell C` and the cell (sagan.study.design), for train and evaluate."""
    if not (args.study and args.cell):
        raise SaganError("--study and --cell go together", hint="e.g. --study attention --cell none-seed0")
    from sagan.study.design import load_study

    cell = load_study(args.study, params).cell(args.cell)
    return cell.params, cell


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
    command = COMMANDS[args.command]
    try:
        params = load_params(args.params) if command.reads_params else None
        if getattr(args, "cell", None) or (args.command != "study" and getattr(args, "study", None)):
            params, args.study_cell = study_cell(params, args)
        importlib.import_module(command.module).run(params, args)
    except SaganError as exc:
        return error(args.command, str(exc))
    except KeyboardInterrupt:
        end_progress_bars()
        print(f"sagan {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an MLflow store failing mid-run is the user's to fix, not a bug of ours
        if not type(exc).__module__.startswith("mlflow"):
            raise
        return error(args.command, f"MLflow: {type(exc).__name__}: {first_line(exc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
