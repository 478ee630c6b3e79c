"""Sliced Wasserstein distance (SWD) on Laplacian-pyramid patches: Karras et al. 2018's CelebA metric.

FID compares images through Inception's features; SWD compares their local pixel statistics, scale
by scale, with no network in between. Each image set becomes a Laplacian pyramid (5x5 binomial
blur with mirrored borders, as the reference `metrics/sliced_wasserstein.py` of
progressive_growing_of_gans), from the full resolution down to `min_size` (16 px, as there). At
each level, random 7x7 patches are normalised per channel over their set, and the distance between
the two patch sets is the 1-D Wasserstein-1 distance of their projections on random unit
directions, averaged. Values are reported x1e3, as in the paper.

Two choices differ from the reference, both so that the metric behaves as a distance: the two sets
take their patches at the same positions (one draw per level, not one per set), so swd(a, a) is
exactly 0 and swd(a, b) == swd(b, a); and a channel with no spread is not scaled up (the reference
divides 0 by 0), so a collapsed, flat generator scores far from real images rather than NaN. All
randomness comes from one numpy Generator seeded by `seed`, drawn in a fixed order (per level,
finest first: the patch corners, then each repeat's directions), so a seed fixes the result.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sagan.errors import SaganError
from sagan.pixels import to_signed

PATCH = 7  # patch side (the reference's nhood_size); a descriptor has 3 * 7 * 7 = 147 components
# The 5x5 blur kernel is the outer product of these binomial taps ([1, 4, 6, 4, 1] x itself / 256).
TAPS = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
# Channel spreads below a thousandth of one uint8 step (in [-1, 1] units) are float rounding, not
# image content: normalising them to unit spread would turn a flat image into noise.
STD_FLOOR = 1e-3 * 2.0 / 255.0


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Every plane of (N, C, H, W) convolved with gain x the 5x5 binomial kernel.

    Borders are mirrored without repeating the edge pixel (torch's "reflect", scipy's "mirror",
    which the reference uses; also OpenCV's pyrDown default). Separable, as sums of shifted
    slices accumulated in place: conv2d's im2col buffer would be 25 times the images (1 GB for
    1000 at 64 px).
    """
    return _taps(_taps(F.pad(x, (2, 2, 2, 2), mode="reflect"), 2, gain), 3, 1.0)


def _taps(x: torch.Tensor, dim: int, gain: float) -> torch.Tensor:
    """sum_k gain * TAPS[k] * x shifted by k along `dim`: 4 shorter than x there ("valid" mode)."""
    length = x.shape[dim] - len(TAPS) + 1
    out = x.narrow(dim, 0, length) * (gain * TAPS[0])
    for k in range(1, len(TAPS)):
        out.add_(x.narrow(dim, k, length), alpha=gain * TAPS[k])
    return out


def _down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2].contiguous()  # a copy, so the full-size blur is freed


def _up(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    spread = x.new_zeros(n, c, 2 * h, 2 * w)
    spread[:, :, ::2, ::2] = x
    return _blur(spread, gain=4.0)  # x4: one sample in four is non-zero


def laplacian_pyramid(images: torch.Tensor, min_size: int = 16) -> list[torch.Tensor]:
    """Levels of float (N, C, S, S) images, finest first: sides S, S/2, ..., min_size.

    Level i is gaussian[i] - up(gaussian[i + 1]); the last level is the Gaussian level itself.
    S must be min_size times a power of two.
    """
    levels = []
    gaussian = images
    while gaussian.shape[-1] > min_size:
        coarser = _down(gaussian)
        levels.append(gaussian - _up(coarser))
        gaussian = coarser
    levels.append(gaussian)
    return levels


def patch_corners(n_images: int, size: int, n_per_image: int, rng: np.random.Generator) -> torch.Tensor:
    """Top-left (row, col) of `n_per_image` random 7x7 patches per image of side `size`.

    (n_images, n_per_image, 2) int64, uniform over every position where the patch fits.
    """
    return torch.from_numpy(rng.integers(0, size - PATCH + 1, size=(n_images, n_per_image, 2)))


def patch_descriptors(level: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """The 7x7 patches of `level` (N, C, S, S) at `corners` (N, P, 2): (N * P, C, 7, 7), image-major."""
    n, c = level.shape[:2]
    # Every 7x7 window as a view (N, C, S-6, S-6, 7, 7), so the index tensors are (N, P), not one
    # int64 per descriptor component. Indices split by a slice put their dims first: (N, P, C, 7, 7).
    windows = level.unfold(2, PATCH, 1).unfold(3, PATCH, 1)
    picked = windows[torch.arange(n)[:, None], :, corners[..., 0], corners[..., 1]]
    return picked.reshape(-1, c, PATCH, PATCH)


def normalise(patches: torch.Tensor) -> torch.Tensor:
    """(M, C, 7, 7) patches -> (M, C * 49) descriptors, each channel at mean 0 and std 1 over the set.

    The std is the population one (the reference's np.std), floored at STD_FLOOR.
    """
    std, mean = torch.std_mean(patches, dim=(0, 2, 3), keepdim=True, correction=0)
    return ((patches - mean) / std.clamp_min(STD_FLOOR)).reshape(len(patches), -1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, repeats: int, directions: int,
                       rng: np.random.Generator) -> float:
    """Mean over `repeats` x `directions` random unit directions of the Wasserstein-1 distance
    between the projections of descriptor sets `a` and `b` (both (M, D)): mean |sort(a) - sort(b)|."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two descriptor sets of one shape (M, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    total = 0.0
    for _ in range(repeats):
        dirs = rng.standard_normal((a.shape[1], directions))
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
        dirs_t = torch.from_numpy(dirs.T.astype(np.float32))  # (directions, D)
        # Projections as (directions, M), each row sorted in contiguous memory, by numpy: its
        # vectorised sort is ~10x faster than torch.sort on the CPU.
        sorted_a, sorted_b = ((dirs_t @ x.T).numpy() for x in (a, b))
        sorted_a.sort(axis=1)
        sorted_b.sort(axis=1)
        np.subtract(sorted_a, sorted_b, out=sorted_a)
        total += float(np.abs(sorted_a, out=sorted_a).mean(dtype=np.float64))
    return total / repeats


def _check(images_a: torch.Tensor, images_b: torch.Tensor, min_size: int, counts: dict[str, int]) -> None:
    if min_size < PATCH + 1 or min_size & (min_size - 1):
        raise SaganError(f"SWD min_size must be a power of two >= {PATCH + 1}, got {min_size}")
    for name, value in counts.items():
        if value < 1:
            raise SaganError(f"SWD {name} must be at least 1, got {value}")
    for which, images in (("first", images_a), ("second", images_b)):
        if not isinstance(images, torch.Tensor):
            raise SaganError(f"SWD's {which} image set must be a torch tensor, got {type(images).__name__}")
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
            raise SaganError(f"SWD's {which} image set must be uint8 (N >= 1, 3, S, S), "
                             f"got {images.dtype} {tuple(images.shape)}")
        side, width = images.shape[2:]
        if side != width or side < min_size or side & (side - 1):
            raise SaganError(f"SWD needs square images with a power-of-two side >= {min_size}, "
                             f"got {side}x{width} in the {which} set")
    if images_a.shape != images_b.shape:
        raise SaganError(f"SWD compares two image sets of one shape, got {tuple(images_a.shape)} and "
                         f"{tuple(images_b.shape)}", hint="take as many images, at the same resolution, in both")


def swd(images_a: torch.Tensor, images_b: torch.Tensor, seed: int, patches_per_image: int = 128,
        repeats: int = 4, directions: int = 128, min_size: int = 16) -> dict[str, float]:
    """SWD x1e3 between two uint8 (N, 3, S, S) image sets of one shape, computed on the CPU.

    Returns {"swd_S": ..., "swd_S/2": ..., "swd_<min_size>": ..., "swd": mean of the levels}.
    The defaults are the reference's: 128 patches per image, 4 repeats x 128 directions.
    """
    _check(images_a, images_b, min_size,
           {"patches_per_image": patches_per_image, "repeats": repeats, "directions": directions})
    rng = np.random.default_rng(seed)
    # In [-1, 1], the project's one float range (sagan.pixels). The reference measures the raw
    # [0, 255]; normalising each channel's descriptors cancels any affine pixel scale (STD_FLOOR
    # aside, which only flat channels reach), so the two agree to float rounding (tests/test_swd.py
    # checks both against a float64 implementation).
    pyramid_a = laplacian_pyramid(to_signed(images_a.cpu()), min_size)
    pyramid_b = laplacian_pyramid(to_signed(images_b.cpu()), min_size)
    result = {}
    for level_a, level_b in zip(pyramid_a, pyramid_b):
        size = level_a.shape[-1]
        corners = patch_corners(len(level_a), size, patches_per_image, rng)
        descriptors_a = normalise(patch_descriptors(level_a, corners))
        descriptors_b = normalise(patch_descriptors(level_b, corners))
        result[f"swd_{size}"] = 1e3 * sliced_wasserstein(descriptors_a, descriptors_b, repeats, directions, rng)
    result["swd"] = float(np.mean(list(result.values())))
    return result
