"""`sagan sample --n 64 --out grid.png --seed 0 [--generator path]`: a grid of generated faces.

`save_grid` is also the trainer's writer of its per-epoch sample grids.
"""
from __future__ import annotations

import argparse
import math
import os

import torch
from torchvision.utils import save_image

from sagan import paths
from sagan.atomic import atomic_path
from sagan.errors import SaganError
from sagan.model.io import load_generator
from sagan.params import Params


def grid_rows(n: int) -> int:
    """Images per grid row: a square grid, or the smallest wider one when n is not a square."""
    return math.ceil(math.sqrt(n))


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> None:
    """Write [N, 3, H, W] images in [-1, 1] as one PNG grid (2 px padding), atomically."""
    with atomic_path(path) as tmp:
        save_image(images.detach().float().cpu(), tmp, nrow=nrow or grid_rows(len(images)), normalize=True,
                   value_range=(-1.0, 1.0), format="PNG")


@torch.no_grad()
def sample_images(generator: torch.nn.Module, n: int, seed: int, z_dim: int) -> torch.Tensor:
    """n images in [-1, 1] from latents drawn on the CPU with `seed` (the same on every device)."""
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))
    device = next(generator.parameters()).device
    return generator(z.to(device)).float().cpu()


def run(params: Params, args: argparse.Namespace) -> None:
    if args.n < 1:
        raise SaganError(f"--n: must be at least 1, got {args.n}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator, config = load_generator(args.generator or paths.GENERATOR, device)
    save_grid(sample_images(generator, args.n, args.seed, config["z_dim"]), args.out)
    print(f"sagan sample: wrote {args.n} images to {args.out}")
