"""How the data stages' files are named and read by the stages after them.

This is the part of the data contract (docs/contracts.md) that later stages import. It lives
apart from the stages that write the files so that a stage's code deps stay what it runs: the
loader (and so train, fid_ref, evaluate) does not depend on the download or prepare code.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sagan import paths

# manifest.parquet's schema metadata key for the shards' sha256s: a JSON list, shard index -> hex digest
SHARD_SHA256_KEY = b"shard_sha256"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.npy"


def read_manifest_column(manifest: Path, column: str) -> pa.Array:
    """One column of manifest.parquet, or a one-line error when the file is missing or unreadable."""
    try:
        return pq.read_table(paths.require(manifest), columns=[column]).column(column).combine_chunks()
    except (pa.ArrowException, OSError) as exc:
        raise paths.bad_input(manifest, f"unreadable ({exc})") from exc


def read_shard_checksums(manifest: Path) -> list[str]:
    """The sha256 of each shard as prepare recorded it (index -> hex); a one-line error when the
    manifest is unreadable or records none."""
    try:
        meta = pq.read_schema(paths.require(manifest)).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise paths.bad_input(manifest, f"unreadable ({exc})") from exc
    try:
        checksums = json.loads(meta[SHARD_SHA256_KEY])
    except (KeyError, ValueError):
        checksums = None
    if not (isinstance(checksums, list) and all(isinstance(c, str) and re.fullmatch(r"[0-9a-f]{64}", c)
                                                for c in checksums)):
        raise paths.bad_input(manifest, f"{SHARD_SHA256_KEY.decode()} metadata is not a JSON list of sha256 hex digests")
    return checksums

