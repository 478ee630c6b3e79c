"""`sagan fid-ref`: Inception pool3 statistics of the reference images -> data/fid/reference.npz.

The reference images are the prepared uint8 shards of `fid.reference_split` (the validation split
by default), exactly as training sees them, at the training resolution.

Reference keys: the output depends on the data and on `fid.weights`, `fid.reference_split` and
`fid.reference_max_images` only (REFERENCE_KEYS, the params of `sagan fid-ref`). `fid.batch_size`
and `fid.device` change speed, not results (each image's features are independent of its batch,
up to float rounding), and the sampling keys (`num_samples`, `seed`, `kid`, `kid_subset_size`)
belong to `sagan evaluate`; so a new generator or a new sampling setting never recomputes the
reference. The file is byte-identical for identical inputs (fixed
zip timestamps), so orchestrators that hash it see no spurious change.

Besides the contract's mu/sigma (float64) it holds `kid_features`: the first KID_MAX_FEATURES
reference features (float32), which `sagan evaluate` needs for KID.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from sagan import paths
from sagan.atomic import atomic_path
from sagan.data.loader import dataset_info, load_split
from sagan.device import resolve_device
from sagan.digest import file_digest
from sagan.errors import SaganError
from sagan.metrics.extractor import EXTRACTOR_LABEL, image_batches, load_extractor, resolve_weights, summarise
from sagan.metrics.stats import KID_MAX_FEATURES
from sagan.params import FidParams

# What the reference depends on besides the data (docstring); `sagan fid-ref` declares exactly these.
REFERENCE_KEYS = ("fid.weights", "fid.reference_split", "fid.reference_max_images")
REQUIRED = ("mu", "sigma", "n", "extractor", "weights_sha256", "weights_kind", "crop", "size",
            "reference_split", "synthetic_data", "kid_features")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the file does not depend on when it was written


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, but byte-reproducible: fixed entry timestamps, stored (uncompressed), atomic."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE)
            with archive.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)


def read_reference() -> dict:
    """The pipeline's reference statistics (paths.FID_REFERENCE, shared by every run and study
    cell) as plain values (0-d arrays become scalars), and `sha256`: the digest of the bytes they
    were read from, which identifies the reference (bounds.json records it). Hashed and loaded from
    one read, so that a reference rewritten meanwhile can never lend its digest to the other's
    statistics."""
    path = paths.require(paths.FID_REFERENCE)
    try:
        content = path.read_bytes()
        with np.load(io.BytesIO(content), allow_pickle=False) as data:
            out = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise paths.bad_input(path, f"not a readable reference file ({exc})") from exc
    missing = [key for key in REQUIRED if key not in out]
    if missing:
        raise paths.bad_input(path, f"missing {', '.join(missing)}")
    return {**{key: value.item() if value.ndim == 0 else value for key, value in out.items()},
            "sha256": file_digest(content)}


def compute_reference(fid: FidParams, verify_shards: bool) -> dict[str, np.ndarray]:
    """The arrays of reference.npz for the prepared data in the working directory."""
    info = dataset_info()
    images = load_split(fid.reference_split, max_images=fid.reference_max_images, verify=verify_shards)
    if len(images) < 2:
        raise SaganError(f"fid.reference_split: '{fid.reference_split}' has {len(images)} images, FID needs >= 2",
                         hint="use another split or prepare more images")
    weights = resolve_weights(fid.weights, paths.STANDIN_WEIGHTS_DIR)
    extractor = load_extractor(weights, resolve_device(fid.device, param="fid.device"))
    summary = summarise(image_batches(images, fid.batch_size), extractor, len(images), keep=KID_MAX_FEATURES,
                        desc="fid-ref")
    return {
        "mu": summary.stats.mean, "sigma": summary.stats.cov, "n": np.array(summary.stats.n),
        "extractor": np.array(EXTRACTOR_LABEL), "weights_sha256": np.array(weights.sha256),
        "weights_kind": np.array(weights.kind), "crop": np.array(info.crop), "size": np.array(info.size),
        "reference_split": np.array(fid.reference_split), "synthetic_data": np.array(info.synthetic),
        "kid_features": summary.kept,
    }
