"""The one way a file is hashed: shards, the manifest, the raw zip, Inception weights, the FID
reference, a generator and metrics.json all get their hex digests here."""
from __future__ import annotations

import hashlib
import os


def file_digest(source: str | os.PathLike | bytes, algorithm: str = "sha256") -> str:
    """The hex digest of a file read in chunks, or of a file's bytes already read: a reader that
    hashes what it loads passes those bytes, so that a file replaced meanwhile cannot lend its
    digest to the other's content."""
    if isinstance(source, bytes):
        return hashlib.new(algorithm, source).hexdigest()
    with open(source, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()
