"""Which Inception weights a recorded digest stands for, without importing torch: the report and
the study judge the `weights_sha256` that evaluate recorded, never its editable `weights_kind`."""
from __future__ import annotations

# The full sha256 of torch-fidelity's weights-inception-2015-12-05-6726825d.pth (95,628,359 bytes;
# pytorch-fid's pt_inception-2015-12-05-6726825d.pth is the same file), as its users record it. The
# file's name carries only its first 8 hex digits (sagan.metrics.extractor.OFFICIAL_SHA256_PREFIX).
OFFICIAL_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"


def weights_kind(sha256: str) -> str:
    """`official` for the official file's digest, `standin` for any other."""
    return "official" if sha256 == OFFICIAL_SHA256 else "standin"
