"""Checkpoints in a run's models/checkpoints/step_XXXXXXX.pt: atomic writes, newest-valid resume,
pruning, and the sets of other runs' checkpoints kept for later.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts so that it loads with
`torch.load(weights_only=True)`; RNG states are stored as the uint8 tensors torch returns. Keys:
`format`, `identity` (training_identity), `trainer` (GanTrainer.state_dict), `rng` (capture_rng),
`loop` (state.LoopState.state_dict: the step and all other loop state), and `epoch` / `position`
(the step's place in its epoch, for people reading the file).

models/checkpoints/ holds the checkpoints of one training identity: before a run, `arrange` moves
every checkpoint of another identity into `superseded/<set_name(identity)>/` and every checkpoint of
another format into `superseded/format-N/`, one set per identity (superseding never touches another
identity's set), and moves this identity's set back when there is one, so that a run resumes where
its params left off however many other runs came between. The sets are capped at
`train.superseded_max_gb`, the oldest (by mtime) removed first. Pruning deletes only checkpoints of
the run being saved, and none beyond the step saved: those are a longer run's of the same params
(before train.max_steps or train.epochs was lowered), kept for when the limit comes back.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import torch

from sagan.atomic import atomic_path
from sagan.errors import one_line
from sagan.params import Params, flatten

FORMAT = 3  # 3: the loop state carries the evaluations during training and the best generator
_NAME = re.compile(r"^step_(\d{7,})\.pt$")
REQUIRED_KEYS = ("format", "identity", "trainer", "rng", "loop")
SUPERSEDED = "superseded"

# Params that may change between a run and its resume without changing what is trained so far.
RESUMABLE_CHANGES = {"train.epochs", "train.max_steps", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.device", "train.compile", "train.superseded_max_gb", "train.eval_every",
                     "train.eval_samples", "train.nproc_per_node"}  # the ranks: `world_size` below


def training_identity(params: Params, data_fingerprint: str, world_size: int) -> dict:
    """What a checkpoint must agree on to be resumed: model and train params, data, world size."""
    identity = {k: v for k, v in flatten(params).items()
                if k.split(".")[0] in ("model", "train") and k not in RESUMABLE_CHANGES}
    identity.update({"data.fingerprint": data_fingerprint, "world_size": world_size})
    return identity


def set_name(identity: dict) -> str:
    """The name of an identity's superseded set: sha256 of its sorted JSON, first 16 hex digits."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_path(step: int, directory: Path) -> Path:
    return Path(directory) / f"step_{step:07d}.pt"


def step_of(path: Path) -> int:
    """The step in a checkpoint's file name."""
    return int(_NAME.match(Path(path).name).group(1))


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, newest (highest step) first; temporary files are ignored."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if _NAME.match(p.name)), key=step_of, reverse=True)


def peek(path: Path) -> dict:
    """The checkpoint at `path` with its tensors memory-mapped, not read (for its format and identity).

    Raises when the file is not a readable checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError("not a checkpoint (no 'format' key)")
    return state


def owner(state: dict) -> str:
    """The superseded set a checkpoint belongs to: `format-N` for another format, else its identity's."""
    if state["format"] != FORMAT:
        return f"format-{state['format']}"
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"not a format-{FORMAT} checkpoint (missing {missing})")
    return set_name(state["identity"])


def save(state: dict, step: int, keep: int, directory: Path) -> Path:
    """Write `state` atomically as step `step`, then delete all but the newest `keep` of this run's
    checkpoints (those of its format and identity) up to `step`; any other file is left alone."""
    path = checkpoint_path(step, directory)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    mine, kept = set_name(state["identity"]), 0
    for other in list_checkpoints(directory):
        if step_of(other) > step:  # a longer run's of these params (module docstring)
            continue
        if other != path:
            try:
                if owner(peek(other)) != mine:
                    continue
            except Exception:  # unreadable: not known to be this run's
                continue
        kept += 1
        if kept > keep:
            other.unlink(missing_ok=True)
    return path


def load_newest_valid(directory: Path, identity: dict | None = None,
                      max_step: int | None = None) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads (and has `identity`, and is at or below `max_step`, when
    given); a corrupt one is reported and the previous one tried."""
    for path in list_checkpoints(directory):
        if max_step is not None and step_of(path) > max_step:
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing = [k for k in REQUIRED_KEYS if k not in state]
            if missing or state["format"] != FORMAT:
                raise ValueError(f"not a format-{FORMAT} checkpoint (missing {missing})")
        except Exception as exc:  # any unreadable file: fall back to the previous checkpoint
            print(f"sagan train: {path}: corrupt checkpoint ({one_line(exc, limit=None)}); falling back to the "
                  f"previous one", file=sys.stderr)
            continue
        if identity is not None and identity_change(state["identity"], identity):
            continue  # another run's (arrange moves those away first; never resumed)
        return path, state
    return None


def identity_change(saved: dict, current: dict) -> str | None:
    """The first param (or data) difference between a checkpoint and this run, or None."""
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            return f"{key} {saved.get(key)!r} -> {current.get(key)!r}"
    return None


def supersede(files: list[Path], name: str, directory: Path) -> Path:
    """Move `files` into the set `superseded/<name>/` (joining what it holds) and return the set.

    Kept rather than deleted: a mistaken --params must not destroy a long run's checkpoints, and
    another identity's set is never touched. The set's mtime becomes now (the cap removes the oldest).
    """
    target = Path(directory) / SUPERSEDED / name
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        os.replace(path, target / path.name)
    os.utime(target)
    return target


def restore(name: str, directory: Path) -> Path | None:
    """Move the set `superseded/<name>/` back into `directory`; the set's path, or None if there is none."""
    source = Path(directory) / SUPERSEDED / name
    files = list_checkpoints(source)
    if not files:
        return None
    for path in files:
        os.replace(path, Path(directory) / path.name)
    with contextlib.suppress(OSError):
        source.rmdir()
    return source


def _size(n_bytes: int) -> str:
    if n_bytes >= 1e8:
        return f"{n_bytes / 1e9:.2f} GB"
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:.0f} kB"


def cap_superseded(max_gb: float, directory: Path) -> list[tuple[Path, int]]:
    """Remove superseded sets, oldest (mtime) first, until they use at most `max_gb` GB (10^9 bytes);
    each removed set is printed with its size, and returned."""
    root = Path(directory) / SUPERSEDED
    if not root.is_dir():
        return []
    sets = {d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in root.iterdir() if d.is_dir()}
    total, removed = sum(sets.values()), []
    for d in sorted(sets, key=lambda d: (d.stat().st_mtime, d.name)):
        if total <= max_gb * 1e9:
            break
        shutil.rmtree(d)
        total -= sets[d]
        removed.append((d, sets[d]))
        print(f"sagan train: superseded checkpoints over train.superseded_max_gb ({max_gb:g} GB): "
              f"removed {d}/ ({_size(sets[d])})")
    return removed


def arrange(identity: dict, max_superseded_gb: float, directory: Path) -> bool:
    """Leave in `directory` only checkpoints of `identity` (and unreadable files, which
    load_newest_valid reports), before any rank reads it: others go to their superseded sets, and
    this identity's set comes back when `directory` has none of its own. Then the cap. Prints what
    it moves; True when it moved another run's checkpoints away. Rank 0 only, under the run's lock.
    """
    directory, mine = Path(directory), set_name(identity)
    others: dict[str, list[tuple[Path, dict]]] = {}
    have_mine = False
    for path in list_checkpoints(directory):
        try:
            state = peek(path)
            name = owner(state)
        except Exception:  # unreadable: reported by load_newest_valid, left in place
            continue
        if name == mine:
            have_mine = True
        else:
            others.setdefault(name, []).append((path, state))
    for name, found in others.items():
        newest, state = found[0]
        if state["format"] != FORMAT:
            why = f"is a format-{state['format']} checkpoint (this version reads format {FORMAT})"
        else:
            why = f"was trained with other params ({identity_change(state['identity'], identity)})"
        target = supersede([path for path, _ in found], name, directory)
        print(f"sagan train: {newest} {why}; moved {'its checkpoints' if len(found) > 1 else 'it'} to {target}/")
    if not have_mine and (restored := restore(mine, directory)) is not None:
        print(f"sagan train: these params' checkpoints were superseded by another run; moved {restored}/ back "
              f"to resume from them")
    cap_superseded(max_superseded_gb, directory)
    return bool(others)


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
