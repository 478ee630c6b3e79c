"""The two pixel ranges and the only conversions between them.

Data is stored as uint8 in [0, 255] (shards, sample grids, what FID's extractor reads); the
networks work in float [-1, 1]. x = u8 / 127.5 - 1 and u8 = round((x + 1) * 127.5), clamped, are
exact inverses on the 256 stored values.
"""
from __future__ import annotations

import torch


def to_signed(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (a new tensor; the layout is kept)."""
    return images_u8.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] (any float dtype; values outside are clamped) -> uint8 [0, 255], rounded."""
    return (images.float() + 1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
