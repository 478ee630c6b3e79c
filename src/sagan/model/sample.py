"""`sagan sample --n 64 --out grid.png --seed 0 [--generator PATH | --model-uri URI]`: a grid of
generated faces, from a generator file (default: models/generator.pt) or from an MLflow model
(`models:/NAME/VERSION`, `runs:/RUN_ID/generator`, ...; sagan.model.registry, which loads nothing
but a pt2 export) in the params' store. --out is a new path or a regular file, replaced atomically.

`save_grid` is also the trainer's writer of its per-epoch sample grids.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from sagan import paths
from sagan.atomic import atomic_path
from sagan.device import resolve_device
from sagan.errors import SaganError
from sagan.model.io import load_generator
from sagan.params import Params
from sagan.pixels import to_uint8


def grid_rows(n: int) -> int:
    """Images per grid row: a square grid, or the smallest wider one when n is not a square."""
    return math.ceil(math.sqrt(n))


def save_grid(images_u8: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> None:
    """Write uint8 [N, 3, H, W] images as one PNG grid (2 px black padding), atomically; the
    pixels are the given bytes (no float round trip)."""
    grid = make_grid(images_u8.detach().cpu(), nrow=nrow or grid_rows(len(images_u8)), padding=2)
    with atomic_path(path) as tmp:  # PIL, not torchvision.io: its encoders are deprecated since 0.29
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")


@torch.no_grad()
def sample_images(generator: torch.nn.Module, n: int, seed: int, z_dim: int) -> torch.Tensor:
    """n images as uint8 NCHW on the CPU, from latents drawn on the CPU with `seed` (the same on every device)."""
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))
    device = next(generator.parameters()).device
    return to_uint8(generator(z.to(device))).cpu()


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
    if args.model_uri:
        from sagan.model.registry import load_model

        generator, z_dim = load_model(params.mlflow, args.model_uri)
    else:
        generator, config = load_generator(args.generator or paths.GENERATOR, resolve_device("auto"))
        z_dim = config["z_dim"]
    images = sample_images(generator, args.n, args.seed, z_dim)
    try:
        save_grid(images, out)
    except OSError as exc:  # full disk and unwritable directories are already SaganErrors (sagan.atomic)
        raise SaganError(f"--out: cannot write {out} ({exc.strerror or exc})") from exc
    print(f"sagan sample: wrote {args.n} images to {args.out}")
