"""Inception weights (official or stand-in) and torch-fidelity's TF-compatible InceptionV3.

`fid.weights` is one of:
- `auto`: the official torch-fidelity file in the torch hub cache, downloaded (hash-checked,
  moved into place atomically) when missing; offline, one line names the file, where to put it
  and the URL.
- a path: the official file elsewhere; its sha256 prefix is checked before it is loaded.
- `standin`: seeded random weights for the same architecture, generated once into
  `paths.STANDIN_WEIGHTS_DIR` with their sha256 beside them, so the same bytes are used every time.
  They make FID runnable offline; their numbers are not comparable with published FIDs and
  every output labels them (`weights_kind: standin`).

Whatever the kind, the bytes are hashed and that very buffer is loaded here, with
`torch.load(weights_only=True)`: what is loaded is exactly what was checked, and a file whose pickle
would build anything but tensors and plain containers is refused without running it (the only
check on the official file's hash is the 8-digit prefix in its name, so the safe load is the guard).
torch-fidelity's extractor is handed the resulting state dict, never a path or bytes: its own loader
unpickles with `weights_only=False`.
"""
from __future__ import annotations

import io
import pickle
import re
import types
import urllib.error
import zipfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.feature_extractor_inceptionv3 import (URL_INCEPTION_V3, BasicConv2d,
                                                          FeatureExtractorInceptionV3)
from tqdm import tqdm

from sagan.atomic import atomic_path
from sagan.digest import file_digest
from sagan.errors import SaganError, one_line
from sagan.metrics.stats import FeatureSummary

FEATURE = "2048"  # pool3
FEATURE_DIM = 2048
EXTRACTOR_NAME = "inception-v3-compat"
EXTRACTOR_LABEL = f"torch-fidelity {torch_fidelity.__version__} {EXTRACTOR_NAME} pool3 ({FEATURE_DIM}-d)"
RESIZE_LABEL = "torch-fidelity bilinear 299"

OFFICIAL_FILE = URL_INCEPTION_V3.rsplit("/", 1)[1]  # weights-inception-2015-12-05-6726825d.pth
# torch hub's convention: the file name ends in the first 8 hex digits of the file's sha256. The
# full sha256 is not published with the file, so the prefix is all that is checked (see load_weights).
OFFICIAL_SHA256_PREFIX = OFFICIAL_FILE.rsplit("-", 1)[1].split(".")[0]

STANDIN_SEED = 0
STANDIN_VERSION = 1  # bump when the stand-in recipe changes: a new file name, never stale bytes
STANDIN_FILE = f"inception-standin-v{STANDIN_VERSION}-seed{STANDIN_SEED}.pth"


@dataclass(frozen=True)
class Weights:
    path: Path
    sha256: str
    kind: str  # "official" or "standin"


def official_weights_path() -> Path:
    """Where torch hub (and torch-fidelity) keep the official file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / OFFICIAL_FILE


def resolve_weights(spec: str, standin_dir: Path) -> Weights:
    """The weights file named by `fid.weights`, present and hash-checked; the stand-in is cached in
    `standin_dir` (paths.STANDIN_WEIGHTS_DIR for the pipeline)."""
    if spec == "standin":
        return standin_weights(Path(standin_dir))
    if spec == "auto":
        path = official_weights_path()
        if not path.is_file():
            download_official(path)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise SaganError(f"fid.weights: file not found: {path}",
                             hint=f"use the official {OFFICIAL_FILE} ({URL_INCEPTION_V3}), auto, or standin")
    return Weights(path, _check_official(path.read_bytes(), path), "official")


def _check_official(data: bytes, path: Path) -> str:
    digest = file_digest(data)
    if not digest.startswith(OFFICIAL_SHA256_PREFIX):
        raise SaganError(f"{path}: sha256 {digest} does not match the official Inception weights "
                         f"(sha256 {OFFICIAL_SHA256_PREFIX}...)",
                         hint=f"download {URL_INCEPTION_V3} again")
    return digest


def download_official(dest: Path, url: str | None = None) -> None:
    """Fetch the official weights into `dest`, checking the hash before the file appears there."""
    url = url or URL_INCEPTION_V3
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(dest) as tmp, \
                open(tmp, "wb") as out, tqdm(total=int(response.headers.get("Content-Length") or 0) or None,
                                             unit="B", unit_scale=True, desc=OFFICIAL_FILE) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
            out.flush()
            digest = file_digest(tmp)
            if not digest.startswith(OFFICIAL_SHA256_PREFIX):
                raise SaganError(f"{url}: downloaded sha256 {digest} does not match the official Inception "
                                 f"weights (sha256 {OFFICIAL_SHA256_PREFIX}...)", hint="retry, or download it by hand")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SaganError(f"{dest}: official Inception weights missing and the download failed ({reason})",
                         hint=f"offline: fetch {url} elsewhere and put it at {dest}, "
                              f"or set fid.weights to its path, or to standin") from exc


def standin_weights(cache_dir: Path) -> Weights:
    """The cached stand-in file (generated on first use); its recorded sha256 must still match."""
    path = cache_dir / STANDIN_FILE
    record = path.with_name(path.name + ".sha256")
    if not (path.is_file() and record.is_file()):
        buffer = io.BytesIO()
        torch.save(standin_state_dict(STANDIN_SEED), buffer)
        data = buffer.getvalue()
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        with atomic_path(record) as tmp:
            tmp.write_text(file_digest(data) + "\n")
    expected = record.read_text().strip()
    digest = file_digest(path)
    if digest != expected:
        raise SaganError(f"{path}: sha256 {digest} differs from the recorded {expected}",
                         hint=f"delete {path} and {record} to regenerate the stand-in weights")
    return Weights(path, digest, "standin")


# torch-fidelity's constructor loads the weights itself: torch.load(path, weights_only=False), or
# torch hub's download when the path is None. _InceptionV3 runs that constructor with the hub loader
# swapped for one that hands over a state dict we loaded safely; check that it still loads that way.
_TF_INIT = FeatureExtractorInceptionV3.__init__
if "load_state_dict_from_url" not in _TF_INIT.__code__.co_names:
    raise ImportError(f"torch-fidelity {torch_fidelity.__version__}: FeatureExtractorInceptionV3 no longer loads "
                      f"its weights through load_state_dict_from_url; {__name__}._InceptionV3 needs updating")


class _InceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's TF-compatible InceptionV3 built around `state_dict` (None: PyTorch's default
    init). torch-fidelity gets no path and no bytes, so it unpickles nothing."""

    def __init__(self, state_dict: dict[str, torch.Tensor] | None):
        def hand_over(*args, **kwargs) -> dict[str, torch.Tensor]:
            return self.state_dict() if state_dict is None else state_dict  # its own state: a no-op load

        init = types.FunctionType(_TF_INIT.__code__, {**_TF_INIT.__globals__, "load_state_dict_from_url": hand_over},
                                  _TF_INIT.__name__, _TF_INIT.__defaults__, _TF_INIT.__closure__)
        init(self, EXTRACTOR_NAME, [FEATURE], feature_extractor_weights_path=None)


def standin_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Seeded random InceptionV3 weights whose pool3 features keep a usable scale.

    PyTorch's default init shrinks activations layer by layer until pool3 is ~1e-8. Here each
    conv gets Gaussian weights from a numpy Generator (bit-identical on every platform) with a
    variance-preserving scale, each filter made zero-sum; batch norm (eval mode, folded) is the
    identity, so no data is needed. Measured on synthetic faces: per-dimension feature std across
    images ~0.1, and FID ranks real/real < colour-shifted < noise (tests/test_fid.py).
    """
    model = _InceptionV3(None)
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if not isinstance(module, BasicConv2d):
            continue
        weight = module.conv.weight
        out_ch, fan_in = weight.shape[0], weight[0].numel()
        w = rng.standard_normal(tuple(weight.shape))
        # Zero-sum filters: a uniform offset (the positive mean of ReLU outputs, an image's mean
        # brightness) does not push whole channels always-on or always-off.
        w -= w.reshape(out_ch, -1).mean(axis=1).reshape(out_ch, 1, 1, 1)
        # ReLU of a unit Gaussian has variance 1/2 - 1/(2 pi): scale so outputs stay ~unit variance.
        w *= np.sqrt(1.0 / (fan_in * (0.5 - 0.5 / np.pi)))
        weight.data = torch.from_numpy(w.astype(np.float32))
        bn = module.bn
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(var + eps) == x
        bn.weight.data.fill_(1.0)
        bn.bias.data.zero_()
    fc_w = rng.standard_normal(tuple(model.fc.weight.shape)) / np.sqrt(model.fc.in_features)
    model.fc.weight.data = torch.from_numpy(fc_w.astype(np.float32))
    model.fc.bias.data.zero_()
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def load_weights(weights: Weights) -> dict[str, torch.Tensor]:
    """The state dict in `weights`, re-verified against its sha256 and unpickled safely.

    `torch.load(weights_only=True)` builds tensors and plain containers only: a pickle that names
    anything else (a payload that would run code) is refused, never run.
    """
    path = weights.path
    data = path.read_bytes()
    if file_digest(data) != weights.sha256:
        raise SaganError(f"{path}: changed since it was checked (sha256 differs)", hint="rerun")
    if weights.kind == "standin":
        hint = f"delete {path} and {path.name}.sha256 beside it to regenerate the stand-in weights"
    else:
        hint = f"download {URL_INCEPTION_V3} again"
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise SaganError(f"{path}: holds objects other than tensors (its pickle calls {refused.group(1)}), "
                             f"which safe loading (weights_only=True) refuses; nothing in it was run",
                             hint=hint) from exc
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", str(exc), re.S)
        raise SaganError(f"{path}: not a readable weights file "
                         f"({one_line(detail.group(1) if detail else exc, whole=True)})", hint=hint) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SaganError(f"{path}: not a readable weights file ({one_line(exc, whole=True)})",
                         hint=hint) from exc
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in state.items())):
        raise SaganError(f"{path}: not InceptionV3 weights (expected a state dict of tensors)", hint=hint)
    return state


def load_extractor(weights: Weights, device: torch.device) -> FeatureExtractorInceptionV3:
    """torch-fidelity's InceptionV3 (pool3 output) with `weights`, re-verified and safely loaded."""
    state = load_weights(weights)
    try:
        model = _InceptionV3(state)
    except RuntimeError as exc:  # load_state_dict: missing, unexpected or mis-shaped tensors
        raise SaganError(f"{weights.path}: not InceptionV3 weights ({one_line(exc, whole=True)})",
                         hint=f"use the official {OFFICIAL_FILE} ({URL_INCEPTION_V3}), auto, or standin") from exc
    if device.type == "cpu":
        # oneDNN's convolutions and pooling make the pass ~1.5x faster in NHWC on the CPU
        # (docs/benchmarks.md); features agree with NCHW to float32 rounding.
        model = model.to(memory_format=torch.channels_last)
    return model.to(device)


def image_batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 NHWC images (as the shards hold them) as NCHW batches for the extractor."""
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size].permute(0, 3, 1, 2)


@torch.no_grad()
def extract_features(extractor: FeatureExtractorInceptionV3, images: torch.Tensor) -> torch.Tensor:
    """pool3 features (float32, n x 2048) of uint8 NCHW RGB images of any size."""
    device = next(extractor.parameters()).device
    (features,) = extractor(images.to(device, non_blocking=True))
    return features


def summarise(batches: Iterable[torch.Tensor], extractor: FeatureExtractorInceptionV3, total: int, keep: int,
              desc: str) -> FeatureSummary:
    """Stream uint8 NCHW batches through the extractor into running statistics.

    Only one batch of images and features is alive at a time, so memory does not grow with `total`.
    """
    summary = FeatureSummary(FEATURE_DIM, keep)
    with tqdm(total=total, unit="img", desc=desc) as bar:
        for images in batches:
            summary.update(extract_features(extractor, images))
            bar.update(len(images))
    return summary
