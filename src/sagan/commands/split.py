"""`sagan split`: a seeded random train/val split of the manifest."""
from __future__ import annotations

import argparse

from sagan import paths
from sagan.params import Params

HELP = "random train/val split of the manifest"
PARAM_KEYS = ("split",)


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.data.split import split

    n_train, n_val = split(paths.MANIFEST, paths.SPLIT_FILE, params.split)
    print(f"split {n_train + n_val} images: {n_train} train, {n_val} val (seed {params.split.seed}) "
          f"-> {paths.SPLIT_FILE}")
