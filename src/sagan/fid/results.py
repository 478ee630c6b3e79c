"""The evaluation's two files (docs/contracts.md, evaluate), written by `sagan evaluate` and read,
merged into one dict, by `sagan report` and `sagan check-fid`.

- reports/metrics.json: numbers only. It is what `dvc metrics show/diff` and `dvc exp show`
  tabulate, so every value is a column a user can sort by; git tracks it (docs/architecture.md).
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

NUMBER_KEYS = ("fid", "kid_mean", "kid_std", "n_gen", "n_ref", "wall_time_s")
OPTIONAL_NUMBERS = ("kid_mean", "kid_std")  # absent when fid.kid is off
PROTOCOL_KEYS = ("run_id", "reference_split", "extractor", "weights_sha256", "weights_kind", "preprocessing",
                 "synthetic_data")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(evaluation: dict, metrics_path: Path = paths.METRICS, protocol_path: Path = paths.METRICS_PROTOCOL) -> None:
    """Split `evaluation` (every NUMBER_KEYS and PROTOCOL_KEYS entry) into the two files."""
    numbers = {k: evaluation[k] for k in NUMBER_KEYS if not (k in OPTIONAL_NUMBERS and evaluation[k] is None)}
    write_json(metrics_path, numbers)
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
    for path, data, keys in ((metrics_path, metrics, set(NUMBER_KEYS) - set(OPTIONAL_NUMBERS)),
                             (protocol_path, protocol, {*PROTOCOL_KEYS, "metrics_sha256"})):
        absent = sorted(keys - set(data))
        if absent:
            raise paths.bad_input(path, f"missing {', '.join(map(repr, absent))}")
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise paths.bad_input(metrics_path, f"{key!r} is {value!r}, not a finite number")
    if protocol["metrics_sha256"] != _sha256(metrics_path):
        raise paths.bad_input(metrics_path, f"is not the file {protocol_path} describes (its sha256 differs): "
                                            f"the two come from different evaluations")
    return {**{k: None for k in OPTIONAL_NUMBERS}, **metrics,
            **{k: v for k, v in protocol.items() if k != "metrics_sha256"}}
