"""`sagan fid-bounds`: every metric's floor (training images) and ceiling (the untrained generator)."""
from __future__ import annotations

import argparse

from sagan import paths
from sagan.params import Params

HELP = "every metric's floor (training images) and ceiling (untrained generator)"
PARAM_KEYS = ("fid.weights", "fid.reference_split", "fid.reference_max_images", "fid.num_samples", "fid.seed",
              "fid.kid", "fid.kid_subset_size", "fid.swd_images", "model", "train.seed")  # bounds.BOUNDS_KEYS


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.atomic import write_json
    from sagan.metrics.bounds import compute

    bounds = compute(params)
    write_json(paths.FID_BOUNDS, bounds)
    floor, ceiling = bounds["floor"], bounds["ceiling"]
    print(f"sagan fid-bounds: FID floor {floor['fid']:.3f} ({floor['n_gen']} training images), ceiling "
          f"{ceiling['fid']:.3f} (untrained generator); SWD floor {floor['swd']:.1f}, ceiling {ceiling['swd']:.1f} "
          f"-> {paths.FID_BOUNDS}")
