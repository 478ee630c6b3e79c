"""`sagan prepare`: the raw zip, centre-cropped and resized, into uint8 shards and a manifest."""
from __future__ import annotations

import argparse

from sagan import paths
from sagan.params import Params

HELP = "crop/resize the raw zip into uint8 shards + manifest"
PARAM_KEYS = ("prepare",)


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.data.prepare import prepare

    summary = prepare(paths.RAW_ZIP, paths.RAW_PARTITION, paths.PREPARED_DIR, params.prepare)
    n_shards = -(-summary["n_images"] // params.prepare.shard_size)
    note = " (synthetic data)" if summary["synthetic_data"] else ""
    print(f"prepared {summary['n_images']} images at {params.prepare.size}x{params.prepare.size} in {n_shards} shards, "
          f"{summary['n_bad']} bad skipped{note} -> {paths.PREPARED_DIR}/")
