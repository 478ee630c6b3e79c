"""`sagan split`: a seeded random train/val split of the manifest -> data/split/split.parquet.

Exactly `round(n * split.val_fraction)` images go to validation, chosen by a permutation from
`numpy.random.default_rng(split.seed)`; rows stay in manifest order (docs/contracts.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sagan.atomic import atomic_path
from sagan.data.layout import read_manifest_column
from sagan.params import SplitParams



def val_mask(n: int, split: SplitParams) -> np.ndarray:
    """Boolean mask, True for the `round(n * val_fraction)` validation rows."""
    n_val = round(n * split.val_fraction)
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(split.seed).permutation(n)[:n_val]] = True
    return mask


def split(manifest: Path, out: Path, split: SplitParams) -> tuple[int, int]:
    """Write the split of `manifest` to `out`; return (n_train, n_val)."""
    files = read_manifest_column(manifest, "file")
    is_val = val_mask(len(files), split)
    table = pa.table({
        "index": pa.array(np.arange(len(files), dtype=np.int64)),
        "file": files,
        "split": pa.array(np.where(is_val, "val", "train").tolist(), pa.string()),
    })
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    n_val = int(is_val.sum())
    return len(files) - n_val, n_val
