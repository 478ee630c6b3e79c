"""Sliced Wasserstein distance: against a float64 numpy implementation with explicit loops,
level and descriptor shapes, distance properties, its ranking of degraded images, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from helpers import prepared_faces
from sagan.errors import SaganError
from sagan.metrics.swd import (laplacian_pyramid, normalise, patch_corners, patch_descriptors,
                           sliced_wasserstein, swd)

KERNEL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def _mirror(i: int, n: int) -> int:
    """Index i of a mirrored border without the edge repeated: d c b | a b c d | c b a."""
    return -i if i < 0 else (2 * n - 2 - i if i >= n else i)


def _np_blur(x: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """5x5 convolution of every (H, W) plane, one kernel tap at a time, borders by _mirror."""
    h, w = x.shape[-2:]
    out = np.zeros_like(x)
    for dy in range(-2, 3):
        rows = [_mirror(y + dy, h) for y in range(h)]
        for dx in range(-2, 3):
            cols = [_mirror(col + dx, w) for col in range(w)]
            out += gain * KERNEL[dy + 2, dx + 2] * x[:, :, rows][:, :, :, cols]
    return out


def _np_pyramid(x: np.ndarray, min_size: int) -> list[np.ndarray]:
    levels, gaussian = [], x
    while gaussian.shape[-1] > min_size:
        coarser = _np_blur(gaussian)[:, :, ::2, ::2]
        zero_filled = np.zeros_like(gaussian)
        zero_filled[:, :, ::2, ::2] = coarser
        levels.append(gaussian - _np_blur(zero_filled, gain=4.0))
        gaussian = coarser
    levels.append(gaussian)
    return levels


def _np_swd(a: np.ndarray, b: np.ndarray, seed: int, patches: int, repeats: int, directions: int,
            min_size: int) -> dict[str, float]:
    """The protocol in float64 numpy, drawing from the generator in the module's documented order."""
    rng = np.random.default_rng(seed)
    out = {}
    for level_a, level_b in zip(_np_pyramid(a, min_size), _np_pyramid(b, min_size)):
        n, _, size, _ = level_a.shape
        corners = rng.integers(0, size - 6, size=(n, patches, 2))
        descriptors = []
        for level in (level_a, level_b):
            p = np.stack([level[i, :, r:r + 7, c:c + 7] for i in range(n) for r, c in corners[i]])
            p = (p - p.mean(axis=(0, 2, 3), keepdims=True)) / p.std(axis=(0, 2, 3), keepdims=True)
            descriptors.append(p.reshape(len(p), -1))
        dists = []
        for _ in range(repeats):
            dirs = rng.standard_normal((descriptors[0].shape[1], directions))
            dirs /= np.sqrt(np.sum(dirs ** 2, axis=0))
            sorted_a, sorted_b = (np.sort(d @ dirs, axis=0) for d in descriptors)
            dists.append(np.mean(np.abs(sorted_a - sorted_b)))
        out[f"swd_{size}"] = 1e3 * float(np.mean(dists))
    out["swd"] = float(np.mean(list(out.values())))
    return out


def _box_blur(images: torch.Tensor) -> torch.Tensor:
    blurred = F.avg_pool2d(images.float(), 3, stride=1, padding=1, count_include_pad=False)
    return blurred.round().to(torch.uint8)


def _noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


@pytest.fixture(scope="module")
def faces32() -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint sets of 32 synthetic faces at 32 px."""
    return prepared_faces(range(32), 32), prepared_faces(range(32, 64), 32)


# --- against the independent implementation --------------------------------------------------

def test_numpy_reference_blur_is_scipys_mirror_convolution():
    # Ties the test's reference to the original's scipy.ndimage.convolve(mode="mirror").
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16))
    expected = scipy.ndimage.convolve(x, KERNEL[None, None], mode="mirror")
    np.testing.assert_allclose(_np_blur(x), expected, rtol=0, atol=1e-12)


def test_pyramid_equals_explicit_convolution():
    x = _noise((2, 3, 64, 64), seed=1).double() / 127.5 - 1
    levels = laplacian_pyramid(x.float())
    expected = _np_pyramid(x.numpy(), 16)
    assert len(levels) == len(expected) == 3
    for got, want in zip(levels, expected):
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("pixel_range", ["signed", "raw"])
def test_swd_equals_numpy_reference(faces32, size, pixel_range):
    # The module measures [-1, 1]; the reference (and "raw" here) the raw [0, 255]: both agree,
    # since each level's descriptors are normalised per channel.
    a = prepared_faces(range(64, 67), size) if size == 64 else faces32[0][:3]
    b = _box_blur(prepared_faces(range(67, 70), size)) if size == 64 else faces32[1][:3]
    to_float = (lambda x: x.numpy() / 127.5 - 1) if pixel_range == "signed" else (lambda x: x.numpy() * 1.0)
    args = dict(seed=7, patches=16, repeats=2, directions=8, min_size=16)
    expected = _np_swd(to_float(a), to_float(b), **args)
    got = swd(a, b, seed=7, patches_per_image=16, repeats=2, directions=8, min_size=16)
    assert list(got) == list(expected) == [f"swd_{s}" for s in (64, 32, 16) if s <= size] + ["swd"]
    for key in expected:
        assert expected[key] > 1.0  # a real difference, so relative agreement means something
        assert got[key] == pytest.approx(expected[key], rel=1e-5), key


def test_sliced_wasserstein_of_shifted_set_is_mean_projected_shift():
    # Shifting a set by t moves every sorted projection on u by t.u: the distance is mean |t.u|.
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 147, generator=g)
    shift = torch.randn(147, generator=g)
    got = sliced_wasserstein(a, a + shift, repeats=3, directions=16, rng=np.random.default_rng(5))
    rng = np.random.default_rng(5)
    expected = []
    for _ in range(3):
        dirs = rng.standard_normal((147, 16))
        expected.append(np.abs(shift.double().numpy() @ (dirs / np.linalg.norm(dirs, axis=0))).mean())
    assert got == pytest.approx(np.mean(expected), rel=1e-5)


# --- shapes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size, min_size, sides", [(32, 16, [32, 16]), (64, 16, [64, 32, 16]),
                                                     (32, 8, [32, 16, 8])])
def test_pyramid_level_sizes(size, min_size, sides):
    levels = laplacian_pyramid(torch.zeros(2, 3, size, size), min_size)
    assert [tuple(level.shape) for level in levels] == [(2, 3, s, s) for s in sides]


def test_descriptors_are_the_patches_at_the_corners_normalised_per_channel():
    spreads = torch.tensor([1.0, 5.0, 0.1])[:, None, None]
    level = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * spreads + 3
    corners = patch_corners(2, 16, 500, np.random.default_rng(0))
    assert corners.shape == (2, 500, 2)
    assert int(corners.min()) == 0 and int(corners.max()) == 16 - 7  # every position, and only those
    patches = patch_descriptors(level, corners)
    assert patches.shape == (1000, 3, 7, 7)
    r, c = corners[1, 4].tolist()
    assert torch.equal(patches[500 + 4], level[1, :, r:r + 7, c:c + 7])  # image-major order
    descriptors = normalise(patches)
    assert descriptors.shape == (1000, 147)
    per_channel = descriptors.view(1000, 3, 49).transpose(0, 1).reshape(3, -1)
    np.testing.assert_allclose(per_channel.mean(1).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std(1, correction=0).numpy(), 1, atol=1e-5)


# --- properties ------------------------------------------------------------------------------

def test_zero_on_identical_sets_symmetric_and_seeded(faces32):
    a, b = faces32[0][:8], faces32[1][:8]
    kwargs = dict(patches_per_image=32, repeats=2, directions=32)
    assert swd(a, a.clone(), seed=3, **kwargs) == {"swd_32": 0.0, "swd_16": 0.0, "swd": 0.0}
    ab = swd(a, b, seed=3, **kwargs)
    assert ab == swd(b, a, seed=3, **kwargs)
    assert ab == swd(a, b, seed=3, **kwargs)
    assert ab != swd(a, b, seed=4, **kwargs)
    assert ab["swd"] == pytest.approx((ab["swd_32"] + ab["swd_16"]) / 2, rel=1e-12)


def test_ranks_real_below_blurred_below_noise(faces32):
    real_a, real_b = faces32
    # Blur the other real set, not real_a itself: the patches share positions, so a blurred copy of
    # real_a would match it patch for patch and beat a different set of real faces.
    d_real = swd(real_a, real_b, seed=0)
    d_blurred = swd(real_a, _box_blur(real_b), seed=0)
    d_noise = swd(real_a, _noise(tuple(real_a.shape), seed=2), seed=0)
    for key in ("swd_32", "swd"):
        assert d_real[key] < d_blurred[key] < d_noise[key], key


def _flat(values: list[int], size: int) -> torch.Tensor:
    """One flat colour (grey level) per image."""
    return torch.tensor(values, dtype=torch.uint8)[:, None, None, None].expand(len(values), 3, size, size).contiguous()


def test_flat_images_read_as_no_detail_not_as_noise(faces32):
    # A collapsed generator's output. With one flat colour the reference divides 0 by 0; with
    # several, the float rounding (~1e-7) in their fine Laplacian levels would be scaled up to unit
    # spread and read as noise (swd_64 ~700 here) without the module's STD_FLOOR.
    kwargs = dict(seed=0, patches_per_image=32, repeats=2, directions=32)
    grey = _flat([128] * 8, 32)
    assert swd(grey, grey, **kwargs) == {"swd_32": 0.0, "swd_16": 0.0, "swd": 0.0}
    d_grey = swd(grey, faces32[0][:8], **kwargs)
    assert all(np.isfinite(v) for v in d_grey.values())
    assert d_grey["swd"] > swd(faces32[1][:8], faces32[0][:8], **kwargs)["swd"]
    d_colours = swd(_flat(list(range(0, 256, 32)), 64), _flat(list(range(5, 256, 32)), 64), **kwargs)
    assert d_colours["swd_64"] < 10 and d_colours["swd_32"] < 10


# --- bad input -------------------------------------------------------------------------------

def _u8(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.uint8)


@pytest.mark.parametrize("a, b, kwargs, words", [
    (_u8(4, 3, 32, 32), _u8(5, 3, 32, 32), {}, "of one shape"),
    (_u8(4, 3, 32, 32), _u8(4, 3, 64, 64), {}, "of one shape"),
    (_u8(4, 3, 32, 16), _u8(4, 3, 32, 16), {}, "square"),
    (_u8(4, 3, 48, 48), _u8(4, 3, 48, 48), {}, "power-of-two"),
    (_u8(4, 3, 8, 8), _u8(4, 3, 8, 8), {}, ">= 16"),
    (_u8(4, 3, 32, 32).float(), _u8(4, 3, 32, 32), {}, "uint8"),
    (_u8(4, 1, 32, 32), _u8(4, 1, 32, 32), {}, "uint8 (N >= 1, 3, S, S)"),
    (_u8(3, 32, 32), _u8(3, 32, 32), {}, "uint8"),
    (_u8(0, 3, 32, 32), _u8(0, 3, 32, 32), {}, "N >= 1"),
    (np.zeros((4, 3, 32, 32), np.uint8), _u8(4, 3, 32, 32), {}, "torch tensor"),
    (_u8(4, 3, 32, 32), _u8(4, 3, 32, 32), {"min_size": 12}, "min_size"),
    (_u8(4, 3, 32, 32), _u8(4, 3, 32, 32), {"directions": 0}, "directions"),
])
def test_bad_input_is_a_one_line_error(a, b, kwargs, words):
    with pytest.raises(SaganError) as err:
        swd(a, b, seed=0, **kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)
