"""One measuring protocol for every image set the pipeline scores against the FID reference: the
trained generator (`sagan evaluate`), and the floor and ceiling beside it (`sagan fid-bounds`).

- FID on the pool3 statistics of all n images.
- KID (with `fid.kid`) and precision/recall (k = 3) on the first KID_MAX_FEATURES pool3 features
  of each side, the reference's stored `kid_features`.
- SWD (sagan.metrics.swd) on pixels, no network: the first m images of each side, m = min(n,
  `fid.swd_images`, reference images), the real side being the reference images themselves.

Images arrive as uint8 NCHW batches and stream through the extractor; only the m images SWD needs
are kept.
"""
from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np
import torch

from sagan import paths
from sagan.data.loader import load_split
from sagan.errors import SaganError
from sagan.device import resolve_device
from sagan.metrics.extractor import load_extractor, resolve_weights, summarise
from sagan.metrics.stats import (KID_MAX_FEATURES, KID_SUBSETS, PRC_NEIGHBORHOOD, frechet_distance,
                             kernel_inception_distance, precision_recall)
from sagan.metrics.swd import swd
from sagan.params import FidParams
from sagan.pixels import to_uint8

# The protocol of each metric beside FID, in words (metrics_protocol.json, the report).
PROTOCOL = {
    "kid": f"polynomial-kernel MMD on the first {KID_MAX_FEATURES} pool3 features per side, {KID_SUBSETS} subsets",
    "precision_recall": f"k-NN balls, k = {PRC_NEIGHBORHOOD} (Kynkäänniemi et al. 2019), on the first "
                        f"{KID_MAX_FEATURES} pool3 features per side",
    "swd": "Laplacian pyramid down to 16 px, 128 random 7x7 patches per image and level, 4 x 128 projections, "
           "x1e3 per level and their mean (Karras et al. 2018)",
}


@torch.no_grad()
def generated_batches(generator: torch.nn.Module, z_dim: int, n: int, batch_size: int,
                      seed: int) -> Iterator[torch.Tensor]:
    """uint8 NCHW batches of n generated images; latents depend on (seed, n) only, not on batch_size."""
    rng = np.random.default_rng(seed)
    device = next(generator.parameters()).device
    for start in range(0, n, batch_size):
        z = torch.from_numpy(rng.standard_normal((min(batch_size, n - start), z_dim), dtype=np.float32))
        yield to_uint8(generator(z.to(device)))


def check_sample_sizes(fid: FidParams, reference: dict) -> None:
    """The sample-size params against what FID and KID need, before any image is drawn."""
    if fid.num_samples < 2:
        raise SaganError(f"fid.num_samples: {fid.num_samples}; FID needs at least 2 samples (it compares "
                         f"covariances)", hint="set fid.num_samples to 2 or more (the paper's protocol: 50000)")
    if not fid.kid:
        return
    n_ref_kid = len(reference["kid_features"])
    if n_ref_kid < 2:
        raise paths.bad_input(paths.FID_REFERENCE, f"holds {n_ref_kid} KID features, KID needs at least 2")
    largest = min(fid.num_samples, KID_MAX_FEATURES, n_ref_kid)
    if fid.kid_subset_size < 2:
        raise SaganError(f"fid.kid_subset_size: {fid.kid_subset_size}; KID needs subsets of at least 2 and at most "
                         f"min(fid.num_samples, reference features) = {largest} (larger values are capped)",
                         hint=f"set fid.kid_subset_size between 2 and {largest}, or fid.kid: false")


def matching_extractor(fid: FidParams, reference: dict, image_size: int, source: str):
    """The Inception extractor of `fid.weights` on `fid.device`, and its weights, after checking that
    the reference was computed with those weights at `source`'s image size; else one line."""
    if image_size != int(reference["size"]):
        raise SaganError(f"{paths.FID_REFERENCE}: reference images are {reference['size']} px but {source} makes "
                         f"{image_size} px", hint="rerun `sagan fid-ref` on data prepared at the generator's size, "
                         "or retrain")
    weights = resolve_weights(fid.weights, paths.STANDIN_WEIGHTS_DIR)
    if weights.sha256 != reference["weights_sha256"]:
        raise SaganError(f"{paths.FID_REFERENCE}: computed with Inception weights {reference['weights_kind']} "
                         f"sha256 {reference['weights_sha256']}, but fid.weights gives {weights.kind} sha256 "
                         f"{weights.sha256}", hint="rerun `sagan fid-ref`")
    return load_extractor(weights, resolve_device(fid.device, param="fid.device")), weights


def reference_images(fid: FidParams, verify: bool) -> torch.Tensor:
    """The reference images SWD compares with (the first `fid.swd_images` that fid_ref reads), uint8 NCHW."""
    limit = min(fid.reference_max_images or math.inf, fid.swd_images)
    return load_split(fid.reference_split, max_images=int(limit), verify=verify).permute(0, 3, 1, 2)


def _keeping_first(batches: Iterable[torch.Tensor], m: int, kept: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """`batches` unchanged, with copies of their first m images appended to `kept` on the way."""
    count = 0
    for batch in batches:
        if count < m:
            kept.append(batch[: m - count].cpu())
            count += len(kept[-1])
        yield batch


def score(batches: Iterable[torch.Tensor], n: int, extractor, reference: dict, real: torch.Tensor,
          fid: FidParams, desc: str) -> dict:
    """FID, KID, precision, recall and SWD (and per level) of the n images in `batches` against `reference`
    (reference.npz) and `real` (reference_images). KID is None with `fid.kid` off; precision and
    recall are None when a side has too few features for k = 3; the sample sizes are returned too."""
    kept: list[torch.Tensor] = []
    m = min(n, len(real))
    summary = summarise(_keeping_first(batches, m, kept), extractor, n, keep=KID_MAX_FEATURES, desc=desc)
    every_row = summary.kept if len(summary.kept) == summary.stats.n else None  # n <= KID_MAX_FEATURES
    out: dict = {"fid": frechet_distance(summary.stats.mean, summary.stats.cov, reference["mu"], reference["sigma"],
                                         every_row),
                 "kid_mean": None, "kid_std": None, "precision": None, "recall": None,
                 "n_gen": summary.stats.n, "n_ref": int(reference["n"]), "n_swd": m}
    if fid.kid:
        out["kid_mean"], out["kid_std"] = kernel_inception_distance(summary.kept, reference["kid_features"],
                                                                    fid.kid_subset_size, fid.seed)
    if min(len(summary.kept), len(reference["kid_features"])) > PRC_NEIGHBORHOOD:
        out["precision"], out["recall"] = precision_recall(summary.kept, reference["kid_features"])
    return {**out, **swd(torch.cat(kept), real[:m], seed=fid.seed)}
