"""The one way later stages read the prepared data: a split as a single uint8 NHWC tensor.

Shards are memory-mapped and only the selected rows are copied, so loading the training set is
one sequential read of the shards (docs/benchmarks.md), not a per-image decode each epoch.

Each shard is checked against the sha256 that the manifest records for it the first time this
process opens it (bit rot, a partial copy), unless the caller passes `verify=False` (every stage
passes `data.verify_shards`). It changes speed, never a result.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from sagan import paths
from sagan.data.layout import read_manifest_column, read_shard_checksums, shard_name
from sagan.digest import file_digest
from sagan.errors import SaganError

SPLITS = ("train", "val", "all")

# Shards whose sha256 matched in this process: (path, device, inode, size, mtime, ctime, expected sha256).
# A file replaced or rewritten since has another key, so it is checked again.
_verified: set[tuple] = set()


@dataclass(frozen=True)
class DatasetInfo:
    size: int  # image side in pixels
    crop: int  # centre crop taken before resizing
    synthetic: bool  # prepared from synthetic CelebA (label outputs accordingly)
    fingerprint: str  # sha256 of manifest.parquet: identifies the exact images
    n_train: int
    n_val: int


def _split_column() -> np.ndarray:
    try:
        column = pq.read_table(paths.require(paths.SPLIT_FILE), columns=["split"]).column("split")
    except (pa.ArrowException, OSError) as exc:
        raise paths.bad_input(paths.SPLIT_FILE, f"unreadable ({exc})") from exc
    return column.to_numpy(zero_copy_only=False).astype(str)


def _selected_rows(split: str) -> np.ndarray:
    """Manifest row numbers of `split`, in manifest order."""
    if split not in SPLITS:
        raise SaganError(f"split {split!r}: unknown, expected one of {', '.join(SPLITS)}")
    n = len(read_manifest_column(paths.MANIFEST, "file"))
    if split == "all":
        return np.arange(n)
    labels = _split_column()
    if len(labels) != n:
        raise paths.bad_input(paths.SPLIT_FILE, f"{len(labels)} rows but the manifest has {n} (stale)")
    return np.flatnonzero(labels == split)


def _check_shard(path: Path, index: int, checksums: list[str]) -> None:
    """Raise unless `path` (shard `index`) has the sha256 the manifest records; once per process."""
    if index >= len(checksums):
        raise paths.bad_input(paths.MANIFEST, f"no sha256 recorded for shard {index} ({len(checksums)} recorded)")
    expected = checksums[index]
    stat = path.stat()
    key = (os.path.abspath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, expected)
    if key in _verified:
        return
    actual = file_digest(path)
    if actual != expected:
        raise paths.bad_input(path, f"sha256 {actual} does not match the manifest's {expected} "
                                    f"(bit rot or a partial copy)")
    _verified.add(key)


def _open_shard(index: int, checksums: list[str] | None = None) -> np.ndarray:
    """Shard `index`, memory-mapped; checked against `checksums` (the manifest's) when given."""
    path = paths.PREPARED_DIR / shard_name(index)
    if not path.is_file():
        raise paths.bad_input(path, f"not found (listed in {paths.MANIFEST})")
    if checksums is not None:
        _check_shard(path, index, checksums)
    try:
        shard = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise paths.bad_input(path, f"unreadable ({exc})") from exc
    if shard.dtype != np.uint8 or shard.ndim != 4 or shard.shape[3] != 3:
        raise paths.bad_input(path, f"{shard.dtype} {shard.shape}, expected uint8 (n, size, size, 3)")
    return shard


def load_split(split: str, *, verify: bool, device: torch.device | str | None = None,
               max_images: int = 0) -> torch.Tensor:
    """The images of `split` (`train`, `val` or `all`) as one uint8 (n, size, size, 3) tensor.

    Rows are in manifest order; `max_images > 0` keeps the first N; `device` moves the tensor there.
    `verify` checks each shard read against the manifest's sha256 (the first time this process
    reads it): `data.verify_shards`.
    """
    selected = _selected_rows(split)
    checksums = read_shard_checksums(paths.MANIFEST) if verify else None
    if max_images > 0:
        selected = selected[:max_images]
    table = pq.read_table(paths.MANIFEST, columns=["shard", "row"])
    shard_of = table.column("shard").to_numpy()[selected]
    row_of = table.column("row").to_numpy()[selected]

    first = _open_shard(0, checksums)
    out = np.empty((len(selected), *first.shape[1:]), dtype=np.uint8)
    # Rows are in manifest order, which is shard order: each shard's rows form one contiguous run.
    bounds = np.flatnonzero(np.diff(shard_of, prepend=-1, append=-1))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        shard = _open_shard(int(shard_of[start]), checksums)
        rows = row_of[start:stop]
        if rows[-1] >= len(shard) or shard.shape[1:] != out.shape[1:]:
            raise paths.bad_input(paths.PREPARED_DIR / shard_name(int(shard_of[start])),
                                  f"does not match {paths.MANIFEST} (row {rows[-1]} of {len(shard)}, "
                                  f"image shape {shard.shape[1:]})")
        out[start:stop] = shard[rows]
    images = torch.from_numpy(out)
    return images.to(device) if device is not None else images


def dataset_info() -> DatasetInfo:
    """What the prepared data is (from the manifest's metadata) and how it is split."""
    try:
        meta = pq.read_schema(paths.require(paths.MANIFEST)).metadata or {}
        size, crop, synthetic = int(meta[b"size"]), int(meta[b"crop"]), meta[b"synthetic"] == b"true"
    except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
        raise paths.bad_input(paths.MANIFEST, f"no valid crop/size/synthetic metadata ({exc!r})") from exc
    labels = _split_column()
    n_val = int((labels == "val").sum())
    return DatasetInfo(size=size, crop=crop, synthetic=synthetic,
                       fingerprint=file_digest(paths.MANIFEST),
                       n_train=len(labels) - n_val, n_val=n_val)
