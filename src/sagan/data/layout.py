"""How the data stages' files are named and read by the stages after them.

This is the part of the data contract (docs/contracts.md) that later stages import. It lives
apart from the stages that write the files so that a stage's code deps stay what it runs: the
loader (and so train, fid_ref, evaluate) does not depend on the download or prepare code.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sagan import paths

CHUNK = 1 << 20


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.npy"


def read_manifest_column(manifest: Path, column: str) -> pa.Array:
    """One column of manifest.parquet, or a one-line error when the file is missing or unreadable."""
    try:
        return pq.read_table(paths.require(manifest), columns=[column]).column(column).combine_chunks()
    except (pa.ArrowException, OSError) as exc:
        raise paths.bad_input(manifest, f"unreadable ({exc})") from exc


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks: how CelebA's official files and a prepared zip are named."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
