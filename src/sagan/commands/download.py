"""`sagan download`: CelebA (or synthetic CelebA) into data/raw/."""
from __future__ import annotations

import argparse

from sagan import paths
from sagan.params import Params

HELP = f"fetch CelebA (or write synthetic CelebA) into {paths.RAW_DIR}/"
# (data.verify_shards is read by the loader; it changes speed, never a result.)
PARAM_KEYS = ("data.source", "data.urls", "data.local", "data.verify_md5", "data.retries", "data.timeout_s",
              "data.synthetic_images", "data.synthetic_seed")


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.data.download import download

    download(params.data)
