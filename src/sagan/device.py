"""The one place where a device setting (`train.device`, `fid.device`) becomes a torch.device."""
from __future__ import annotations

import torch

from sagan.errors import SaganError


def resolve_device(name: str, local_rank: int = 0, param: str = "device") -> torch.device:
    """`auto` is CUDA when available, else the CPU; a bare `cuda` is this process's local GPU.

    `param` is the setting `name` came from, named in the one-line errors.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SaganError(f"{param}: unknown device '{name}'", hint="use auto, cpu or cuda") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SaganError(f"{param}: '{name}' requested but CUDA is not available",
                             hint=f"set {param}: auto or cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device
