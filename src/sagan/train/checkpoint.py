"""Checkpoints in models/checkpoints/step_XXXXXXX.pt: atomic writes, newest-valid resume, pruning.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts so that it loads with
`torch.load(weights_only=True)`; RNG states are stored as the uint8 tensors torch returns. Keys:
`format`, `identity` (training_identity), `trainer` (GanTrainer.state_dict), `rng` (capture_rng),
`loop` (loop.LoopState.state_dict: the step and all other loop state), and `epoch` / `position`
(the step's place in its epoch, for people reading the file).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import torch

from sagan import paths
from sagan.atomic import atomic_path
from sagan.params import Params, flatten

FORMAT = 2
_NAME = re.compile(r"^step_(\d{7,})\.pt$")
REQUIRED_KEYS = ("format", "identity", "trainer", "rng", "loop")
SUPERSEDED = "superseded"

# Params that may change between a run and its resume without changing what is trained so far.
RESUMABLE_CHANGES = {"train.epochs", "train.max_steps", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.device", "train.compile"}


def training_identity(params: Params, data_fingerprint: str, world_size: int) -> dict:
    """What a checkpoint must agree on to be resumed: model and train params, data, world size."""
    identity = {k: v for k, v in flatten(params).items()
                if k.split(".")[0] in ("model", "train") and k not in RESUMABLE_CHANGES}
    identity.update({"data.fingerprint": data_fingerprint, "world_size": world_size})
    return identity


def checkpoint_path(step: int, directory: Path = paths.CHECKPOINTS_DIR) -> Path:
    return Path(directory) / f"step_{step:07d}.pt"


def list_checkpoints(directory: Path = paths.CHECKPOINTS_DIR) -> list[Path]:
    """Checkpoint files, newest (highest step) first; temporary files are ignored."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save(state: dict, step: int, keep: int, directory: Path = paths.CHECKPOINTS_DIR) -> Path:
    """Write `state` atomically as step `step`, then delete all but the newest `keep`."""
    path = checkpoint_path(step, directory)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    for old in list_checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_newest_valid(directory: Path = paths.CHECKPOINTS_DIR) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads; a corrupt one is reported and the previous one tried."""
    for path in list_checkpoints(directory):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing = [k for k in REQUIRED_KEYS if k not in state]
            if missing or state["format"] != FORMAT:
                raise ValueError(f"not a format-{FORMAT} checkpoint (missing {missing})")
        except Exception as exc:  # any unreadable file: fall back to the previous checkpoint
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"sagan train: {path}: corrupt checkpoint ({reason}); falling back to the previous one",
                  file=sys.stderr)
            continue
        return path, state
    return None


def identity_change(saved: dict, current: dict) -> str | None:
    """The first param (or data) difference between a checkpoint and this run, or None."""
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            return f"{key} {saved.get(key)!r} -> {current.get(key)!r}"
    return None


def supersede(directory: Path = paths.CHECKPOINTS_DIR) -> Path:
    """Move a run's checkpoints into `superseded/` (replacing an older set) so a new run starts.

    Kept rather than deleted: a mistaken --params must not destroy a long run's checkpoints.
    """
    target = Path(directory) / SUPERSEDED
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in list_checkpoints(directory):
        os.replace(path, target / path.name)
    return target


def capture_rng(device: torch.device, generators: dict[str, torch.Generator]) -> dict:
    """Global torch RNG states (CPU, and CUDA when used) and the loop's own generators."""
    state = {"torch_cpu": torch.get_rng_state(),
             "generators": {name: g.get_state() for name, g in generators.items()}}
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"], device)
    for name, g in generators.items():
        g.set_state(state["generators"][name])
