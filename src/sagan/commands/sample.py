"""`sagan sample --n 64 --out grid.png --seed 0 [--generator PATH | --model-uri URI]`: a grid of
generated faces, from a generator file (default: models/generator.pt) or from an MLflow model
(`models:/NAME/VERSION`, `runs:/RUN_ID/generator`, ...; sagan.model.registry, which loads nothing
but a pt2 export) in the params' store. --out is a new path or a regular file, replaced atomically."""
from __future__ import annotations

import argparse
from pathlib import Path

from sagan import paths
from sagan.errors import SaganError
from sagan.params import Params

HELP = f"draw a sample grid from {paths.RUN.generator} or an MLflow model"
PARAM_KEYS = ()  # a picture for people: not a pipeline stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=64, help="number of images (default: %(default)s)")
    parser.add_argument("--out", default="samples.png", help="output PNG (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="latent seed (default: %(default)s)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--generator", default=None, help=f"generator file (default: {paths.RUN.generator})")
    source.add_argument("--model-uri", default=None, help="an MLflow model instead: models:/NAME/VERSION "
                        "or runs:/RUN_ID/generator, in the params' MLflow store")


def run(params: Params, args: argparse.Namespace) -> None:
    if args.n < 1:
        raise SaganError(f"--n: must be at least 1, got {args.n}")
    out = Path(args.out)
    # Checked before the generator runs: the rename onto a directory would fail at the end, and
    # onto a FIFO or device node (as root, /dev/null) would replace it.
    if out.is_dir():
        raise SaganError(f"--out: {out} is a directory; give the PNG file to write",
                         hint=f"e.g. --out {out / 'samples.png'}")
    if out.exists() and not out.is_file():
        raise SaganError(f"--out: {out} exists and is not a regular file; sample writes a PNG file",
                         hint="give a new path or an existing PNG, e.g. --out samples.png")
    from sagan.device import resolve_device
    from sagan.model.io import load_generator
    from sagan.model.registry import load_model
    from sagan.model.sample import sample_images, save_grid

    if args.model_uri:
        generator, z_dim = load_model(params.mlflow, args.model_uri)
    else:
        generator, config = load_generator(args.generator or paths.RUN.generator, resolve_device("auto"))
        z_dim = config["z_dim"]
    images = sample_images(generator, args.n, args.seed, z_dim)
    try:
        save_grid(images, out)
    except OSError as exc:  # full disk and unwritable directories are already SaganErrors (sagan.atomic)
        raise SaganError(f"--out: cannot write {out} ({exc.strerror or exc})") from exc
    print(f"sagan sample: wrote {args.n} images to {args.out}")
