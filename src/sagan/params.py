"""params.yaml parsed into typed, validated sections; the dataclass defaults are the paper's values.

Every stage reads only the keys it declares (`PARAM_KEYS` in its module; docs/architecture.md).
Validation stops at the first problem with one line naming the dotted key and what is expected,
so that a typo in params.yaml never silently falls back to a default.

This module owns the paper's configuration: params.yaml is written from these defaults and their
`doc` comments by `sagan params` (sagan.profiles), and configs/*.yaml list only what a profile
changes. To add a param: add a field to its section's dataclass (the default is the paper's
value; `spec(...)` for a comment, choices or a range), then run `sagan params --profile paper`.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from sagan.errors import SaganError, one_line

DEFAULT_PARAMS = Path("params.yaml")


def spec(default, *, doc: str = "", choices: tuple | None = None, check: Callable[[Any], bool] | None = None,
         expect: str = "", **kw):
    """A dataclass field with its params.yaml comment (`doc`) and validation: `choices`, or `check`
    plus an `expect` text."""
    meta = {"doc": doc, "choices": choices, "check": check, "expect": expect}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


positive = dict(check=lambda v: v > 0, expect="a number > 0")
non_negative = dict(check=lambda v: v >= 0, expect="a number >= 0")
fraction = dict(check=lambda v: 0 <= v < 1, expect="a number in [0, 1)")


@dataclass(frozen=True)
class DataParams:
    # gdrive: the official CelebA Drive files; url: mirrors in `urls`; local: files in `local`;
    # synthetic: procedural faces in CelebA's layout (offline demos and CI; labelled everywhere).
    source: str = spec("gdrive", choices=("gdrive", "url", "local", "synthetic"))
    urls: dict = spec({"zip": "", "partition": ""}, doc="for source: url")
    local: dict = spec({"zip": "", "partition": ""}, doc="for source: local")
    verify_md5: bool = True
    retries: int = spec(5, **non_negative)
    timeout_s: float = spec(60.0, **positive)
    synthetic_images: int = spec(4000, check=lambda v: v >= 10, expect="an integer >= 10")
    synthetic_seed: int = 0
    # Check each shard's sha256 against the manifest once per process before reading it (bit rot).
    verify_shards: bool = spec(True, doc="check shard checksums on first read (speed only, never results)")


@dataclass(frozen=True)
class PrepareParams:
    crop: int = spec(160, doc="centre crop (paper)", **positive)
    size: int = spec(64, doc="resize with antialiasing (paper)", check=lambda v: v in (32, 64, 128), expect="one of 32, 64, 128")
    shard_size: int = spec(10000, **positive)
    workers: int = spec(0, doc="0 = all cores", check=lambda v: v >= 0, expect="an integer >= 0 (0 = all cores)")
    max_bad_fraction: float = spec(0.001, **fraction)


@dataclass(frozen=True)
class SplitParams:
    val_fraction: float = spec(0.2, doc="80:20 (paper)", check=lambda v: 0 < v < 1, expect="a number in (0, 1)")
    seed: int = 0


@dataclass(frozen=True)
class FidParams:
    # auto: the official torch-fidelity weights from the torch hub cache (downloaded if online);
    # standin: seeded random weights for the same architecture (offline; not comparable with
    # published FID); anything else: a path to the official weights file.
    weights: str = spec("auto", doc="auto | standin | /path/to/weights-inception-2015-12-05-6726825d.pth")
    reference_split: str = spec("val", choices=("train", "val", "all"))
    reference_max_images: int = spec(0, doc="0 = all validation images", check=lambda v: v >= 0, expect="an integer >= 0 (0 = all)")
    num_samples: int = spec(50000, **positive)
    batch_size: int = spec(200, **positive)
    seed: int = 0
    kid: bool = True
    kid_subset_size: int = spec(1000, **positive)
    swd_images: int = spec(8192, doc="images per side for SWD, at most (its memory grows with it)", **positive)
    device: str = "auto"


@dataclass(frozen=True)
class ModelParams:
    z_dim: int = spec(128, **positive)
    g_channels: int = spec(64, **positive)
    d_channels: int = spec(64, **positive)
    g_batchnorm: bool = True
    d_batchnorm: bool = spec(True, doc="paper: batch norm in both networks")
    spectral_norm: bool = spec(True, doc="paper: on every convolution")
    leaky_slope: float = spec(0.2, doc="paper: s = 0.2", **non_negative)
    attention: bool = True
    attention_style: str = spec("sagan", choices=("sagan", "biggan"))
    # Attention sits after this many layers: 3 = between the 3rd and 4th (the paper).
    attention_after: int = spec(3, doc="paper: between the 3rd and 4th layers", check=lambda v: 1 <= v <= 4, expect="an integer in [1, 4]")


@dataclass(frozen=True)
class TrainParams:
    loss: str = spec("bce", doc="paper: BCE with logits + gradient penalty", choices=("bce", "hinge"))
    gp_lambda: float = spec(10.0, **non_negative)
    # Lazy regularisation (StyleGAN2's lazy R1): the penalty on every k-th D update, weighted k x.
    gp_every: int = spec(1, doc="paper: 1 (every D update)", check=lambda v: v >= 1, expect="an integer >= 1")
    lr_g: float = spec(1e-4, doc="paper", **positive)
    lr_d: float = spec(4e-4, doc="paper", **positive)
    beta1: float = spec(0.5, doc="paper", **fraction)
    beta2: float = spec(0.999, doc="paper", **fraction)
    n_critic: int = spec(1, **positive)
    batch_size: int = spec(64, doc="not stated in the paper", **positive)
    epochs: int = spec(10, doc="not stated in the paper", **positive)
    max_steps: int = spec(0, doc="0 = no cap", check=lambda v: v >= 0, expect="an integer >= 0 (0 = no cap)")
    ema_decay: float = spec(0.0, doc="0 = off (paper)", check=lambda v: 0 <= v < 1, expect="a number in [0, 1) (0 = off)")
    precision: str = spec("fp32", choices=("fp32", "bf16", "fp16"))
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    nproc_per_node: int = spec(1, doc="training processes on one node (DDP ranks, one per GPU); > 1 makes the "
                               "Snakemake rule launch `torchrun --standalone`", check=lambda v: v >= 1,
                               expect="an integer >= 1")
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    log_every: int = spec(50, **positive)
    checkpoint_every: int = spec(1000, **positive)
    keep_checkpoints: int = spec(3, check=lambda v: v >= 2, expect="an integer >= 2")
    superseded_max_gb: float = spec(20.0, doc="disk cap for other params' checkpoint sets kept for later",
                                    **non_negative)
    sample_grid: int = spec(64, **positive)
    # FID, KID, precision/recall and SWD of the generator every eval_every steps (and at the end):
    # MLflow curves, reports/train/evals.csv, and models/generator_best.pt (the lowest FID).
    eval_every: int = spec(2500, doc="steps between evaluations during training (~1 CelebA epoch at batch 64); "
                           "0 = off", check=lambda v: v >= 0, expect="an integer >= 0 (0 = off)")
    eval_samples: int = spec(2048, doc="generated images per evaluation during training",
                             check=lambda v: v >= 4, expect="an integer >= 4")


@dataclass(frozen=True)
class MlflowParams:
    tracking_uri: str = spec("sqlite:///mlflow.db", doc="MLFLOW_TRACKING_URI overrides")
    experiment: str = "sagan-celeba"
    profile: str = spec("paper", doc="the label on every run; a profile's is its file name unless it sets one")
    log_model: bool = spec(True, doc="the generator as an MLflow model of its run (pt2 format), for the registry")
    registered_model: str = spec("sagan-celeba-generator",
                                 doc="Model Registry name: one version per training run; empty = do not register")
    system_metrics: bool = spec(False, doc="MLflow's system metrics of training (CPU, memory, disk, network; GPU "
                                "with nvidia-ml-py) as system/..., every 10 s")


@dataclass(frozen=True)
class EvaluateParams:
    generator: str = spec("last", doc="paper: the generator after the last step; best: the lowest FID during "
                          "training (train.eval_every)", choices=("last", "best"))


@dataclass(frozen=True)
class ReportParams:
    title: str = "SAGAN on CelebA: reproduction of Bury (IVUS 2024), Table 1"
    history_max_runs: int = spec(50, **positive)


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    split: SplitParams = field(default_factory=SplitParams)
    fid: FidParams = field(default_factory=FidParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    mlflow: MlflowParams = field(default_factory=MlflowParams)
    report: ReportParams = field(default_factory=ReportParams)


def _type_ok(value: Any, typ: type) -> bool:
    if typ is bool:
        return isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is float:  # an int is a float here (`gp_lambda: 10`); `1e-4`, a string to YAML, was converted before
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, typ)


def _unknown(key: str, allowed, where: str) -> SaganError:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
    return SaganError(f"{where}: unknown param '{key}'", hint=hint)


COMPLETE_HINT = "a params file spells out every key; `sagan params --profile NAME` writes a complete one"


def _missing(where: str, what: str) -> SaganError:
    return SaganError(f"{where}: missing {what}", hint=COMPLETE_HINT)


def _parse_section(cls, raw: Any, prefix: str, where: str, partial: bool):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SaganError(f"{where}: '{prefix}' must be a mapping of keys, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise _unknown(f"{prefix}.{key}", [f"{prefix}.{k}" for k in fields], where)
        f, typ, dotted = fields[key], hints[key], f"{prefix}.{key}"
        if typ is float and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, typ):
            raise SaganError(f"{where}: '{dotted}' must be {typ.__name__}, got {value!r}")
        if typ is float:
            value = float(value)
        if typ is dict:
            default = f.default_factory()
            extra = set(value) - set(default)
            if extra:
                raise _unknown(f"{dotted}.{sorted(extra)[0]}", [f"{dotted}.{k}" for k in default], where)
            absent = [k for k in default if k not in value]
            if absent and not partial:
                raise _missing(where, f"param '{dotted}.{absent[0]}'")
            value = {**default, **value}
        choices, check = f.metadata.get("choices"), f.metadata.get("check")
        if choices and value not in choices:
            raise SaganError(f"{where}: '{dotted}' must be one of {', '.join(map(str, choices))}; got {value!r}")
        if check and not check(value):
            raise SaganError(f"{where}: '{dotted}' must be {f.metadata['expect']}; got {value!r}")
        values[key] = value
    absent = [k for k in fields if k not in values]
    if absent and not partial:
        raise _missing(where, f"param '{prefix}.{absent[0]}'")
    return cls(**values)


def parse_params(raw: Any, where: str = "params", partial: bool = False) -> Params:
    """Validate a params mapping (as read from YAML) into `Params`.

    A params file must spell out every section and key, so that what a run used is written down
    and a forgotten key never silently means the paper's value. `partial=True` fills the gaps with
    the defaults: for profiles, which list only their changes, and for saved generator configs.
    """
    if not raw and not partial:
        raise SaganError(f"{where}: empty", hint=COMPLETE_HINT)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SaganError(f"{where}: expected a mapping of sections, got {type(raw).__name__}")
    hints = typing.get_type_hints(Params)
    sections = {}
    for name, section in raw.items():
        if name not in hints:
            raise _unknown(name, list(hints), where)
        sections[name] = _parse_section(hints[name], section, name, where, partial)
    absent = [name for name in hints if name not in sections]
    if absent and not partial:
        raise _missing(where, f"section '{absent[0]}'")
    params = Params(**sections)
    if params.evaluate.generator == "best" and not params.train.eval_every:
        raise SaganError(f"{where}: 'evaluate.generator' is 'best' but 'train.eval_every' is 0, so no generator is "
                         "scored during training", hint="set train.eval_every > 0, or evaluate.generator: last")
    return params


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: plain YAML
    keeps the last one, so `lr_d` set twice silently trains with whichever came second."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                problem=f"duplicate key '{key}' at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_yaml(text: str, where: str) -> Any:
    """A params or profile file's YAML, or one line naming the file and the problem."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise SaganError(f"{where}: not valid YAML ({one_line(exc, limit=None)})") from exc


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if path.is_dir():
        raise SaganError(f"{path}: is a directory, not a params file",
                         hint="give the params file's path, e.g. params.yaml")
    if not path.is_file():
        raise SaganError(f"{path}: params file not found", hint="run from the project root or pass --params")
    return parse_params(parse_yaml(path.read_text(), str(path)), where=str(path))


# A URL inside any text: scheme://, then everything up to white space.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def redact_url(value: Any) -> Any:
    """Text with every URL in it stripped of the parts that may carry secrets (user:password@,
    the query of a presigned URL, the fragment); the text around the URLs, and anything that is
    not a string, unchanged. Applied wherever params are recorded."""
    return _URL.sub(lambda match: _redacted(match.group()), value) if isinstance(value, str) else value


def _redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return url  # nothing secret; and a round trip could rewrite it (sqlite:////abs/path)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "<redacted>" if parts.query else "", ""))


def flatten(params: Params) -> dict[str, Any]:
    """Dotted keys (`train.lr_d`) to values, for MLflow, run records and params diffs; URLs
    redacted (`redact_url`), since everything flattened is recorded somewhere."""
    out: dict[str, Any] = {}
    for section, values in dataclasses.asdict(params).items():
        for key, value in values.items():
            if isinstance(value, dict):
                for sub, v in value.items():
                    out[f"{section}.{key}.{sub}"] = redact_url(v)
            else:
                out[f"{section}.{key}"] = redact_url(value)
    return out
