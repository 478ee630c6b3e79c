"""Sample grids: images drawn from a generator with a seed, written as one PNG (`sagan sample`,
and the trainer's per-epoch grids)."""
from __future__ import annotations

import math
import os

import torch
from PIL import Image
from torchvision.utils import make_grid

from sagan.atomic import atomic_path
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
