"""The generator file (models/generator.pt; format in docs/contracts.md).

`{"state_dict": ..., "config": {model params..., "image_size": int}, "ema": bool}`, loaded with
`torch.load(weights_only=True)`. Spectral-norm parametrizations are saved as they are
(`parametrizations.weight.original` and the power-iteration vectors `_u`, `_v`), so a loaded
generator in eval mode computes exactly the saved one's weights.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import zipfile

import torch
from torch import nn

from sagan import paths
from sagan.atomic import atomic_path
from sagan.errors import one_line
from sagan.model.networks import Generator
from sagan.params import ModelParams, parse_params


def _unwrapped(module: nn.Module) -> nn.Module:
    """The plain module under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    for attribute in ("module", "_orig_mod"):
        inner = getattr(module, attribute, None)
        if isinstance(inner, nn.Module):
            return _unwrapped(inner)
    return module


def plain_state_dict(generator: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of `generator` (unwrapped from DDP and torch.compile) as detached CPU tensors."""
    return {k: v.detach().cpu() for k, v in _unwrapped(generator).state_dict().items()}


def save_generator(path: str | os.PathLike, generator: nn.Module, model: ModelParams,
                   image_size: int, ema: bool) -> None:
    """Write `generator`'s weights and the config that rebuilds it, atomically.

    The bytes depend on the weights and config only (DVC hashes the file): torch.save names the
    records inside its zip after the file it writes, so it writes to memory (records `archive/...`,
    fixed timestamps), not to the temporary file, whose name is random.
    """
    state = plain_state_dict(generator)
    config = {**dataclasses.asdict(model), "image_size": int(image_size)}
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "config": config, "ema": bool(ema)}, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """The generator saved at `path`, on `device`, in eval mode, and its config dict."""
    path = paths.require(path)
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise paths.bad_input(path, "not a generator file (not a torch.save archive: truncated, or another "
                              "file type)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise paths.bad_input(path, "holds objects other than tensors and plain values, which safe loading "
                              "(weights_only=True) refuses") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise paths.bad_input(path, f"not a readable generator file ({one_line(exc, whole=True)})") from exc
    if not (isinstance(saved, dict) and isinstance(saved.get("state_dict"), dict)
            and isinstance(saved.get("config"), dict) and "image_size" in saved["config"]):
        raise paths.bad_input(path, "not a generator file (expected a state_dict and a config with image_size)")
    config = dict(saved["config"])
    model = parse_params({"model": {k: v for k, v in config.items() if k != "image_size"}},
                             where=str(path), partial=True).model
    try:
        generator = Generator(model, int(config["image_size"]))
        generator.load_state_dict(saved["state_dict"])
    except (RuntimeError, ValueError) as exc:
        raise paths.bad_input(path, f"weights do not match the config saved with them "
                                    f"({one_line(exc, whole=True)})") from exc
    return generator.to(device).eval(), config
