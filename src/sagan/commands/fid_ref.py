"""`sagan fid-ref`: Inception statistics of the reference images."""
from __future__ import annotations

import argparse

from sagan import paths
from sagan.params import Params

HELP = "Inception statistics of the reference images"
PARAM_KEYS = ("fid.weights", "fid.reference_split", "fid.reference_max_images")  # reference.REFERENCE_KEYS


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.metrics.reference import compute_reference, write_npz

    arrays = compute_reference(params.fid, params.data.verify_shards)
    write_npz(paths.FID_REFERENCE, arrays)
    print(f"sagan fid-ref: {int(arrays['n'])} {params.fid.reference_split} images -> {paths.FID_REFERENCE} "
          f"(weights {arrays['weights_kind']})")
