"""The evaluation's two files (docs/contracts.md, evaluate), written by `sagan evaluate` and read,
merged into one dict, by `sagan report` and `sagan check-fid`.

- reports/metrics.json: numbers only (the floor and ceiling as rows of numbers). It is what `dvc
  metrics show/diff` and `dvc exp show` tabulate, so every value is a column a user can sort by
  (`fid`, `floor.fid`, ...); git tracks it (docs/architecture.md).
- reports/metrics_protocol.json: how those numbers were measured (extractor, weights, split,
  preprocessing, synthetic data), which training run they measure (`run_id`), and the sha256 of
  the metrics.json it belongs to, so a pair from two evaluations (a kill between the two writes,
  a hand edit) is refused instead of reported.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from sagan import paths
from sagan.atomic import write_json

# Every other key of an evaluation is a number, or a row of numbers (`floor`, `ceiling`), and goes
# to metrics.json; None values (KID with fid.kid off, precision/recall of too few images) are left out.
PROTOCOL_KEYS = ("run_id", "generator", "reference_split", "extractor", "weights_sha256", "weights_kind",
                 "preprocessing", "synthetic_data", "metric_protocols")
REQUIRED_NUMBERS = ("fid", "n_gen", "n_ref", "wall_time_s", "floor", "ceiling")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _numbers(values: dict) -> dict:
    return {k: _numbers(v) if isinstance(v, dict) else v for k, v in values.items() if v is not None}


def write(evaluation: dict, metrics_path: Path = paths.METRICS, protocol_path: Path = paths.METRICS_PROTOCOL) -> None:
    """Split `evaluation` (every PROTOCOL_KEYS entry, and numbers) into the two files."""
    write_json(metrics_path, _numbers({k: v for k, v in evaluation.items() if k not in PROTOCOL_KEYS}))
    write_json(protocol_path, {**{k: evaluation[k] for k in PROTOCOL_KEYS}, "metrics_sha256": _sha256(metrics_path)})


def _read_object(path: Path) -> dict:
    try:
        data = json.loads(paths.require(path).read_text())
    except json.JSONDecodeError as exc:
        raise paths.bad_input(path, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise paths.bad_input(path, "not a JSON object")
    return data


def read(metrics_path: Path = paths.METRICS, protocol_path: Path = paths.METRICS_PROTOCOL) -> dict:
    """The numbers and the protocol of one evaluation as one dict; a missing key, a number that is
    not one, or a pair from two evaluations is one line naming the file."""
    metrics, protocol = _read_object(metrics_path), _read_object(protocol_path)
    for path, data, keys in ((metrics_path, metrics, set(REQUIRED_NUMBERS)),
                             (protocol_path, protocol, {*PROTOCOL_KEYS, "metrics_sha256"})):
        absent = sorted(keys - set(data))
        if absent:
            raise paths.bad_input(path, f"missing {', '.join(map(repr, absent))}")
    for key, value in leaves(metrics):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise paths.bad_input(metrics_path, f"{key!r} is {value!r}, not a finite number")
    if protocol["metrics_sha256"] != _sha256(metrics_path):
        raise paths.bad_input(metrics_path, f"is not the file {protocol_path} describes (its sha256 differs): "
                                            f"the two come from different evaluations")
    return {**metrics, **{k: v for k, v in protocol.items() if k != "metrics_sha256"}}


def leaves(values: dict, prefix: str = ""):
    """(dotted key, value) of every non-dict value, as DVC flattens them (`floor.fid`)."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
