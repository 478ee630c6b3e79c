"""`sagan check-fid`: the FID regression gate that CI runs on the smoke profile.

It fails when
- this run's FID (reports/metrics.json, read with its protocol by sagan.metrics.results) exceeds the baseline by more than its tolerance, or
- the trained generator does not close most of the gap between the untrained generator and the
  real training images: (ceiling - FID) / (ceiling - floor) must reach GAP_CLOSED_MIN, with the
  ceiling and floor of data/fid/bounds.json that evaluate copied beside the FID (same protocol).

The baseline (tests/baselines/smoke.json) records the FID and the protocol it was measured with;
a run measured with another protocol (sample counts, extractor weights) is refused as not
comparable. `sagan check-fid --update` (or `make update-baseline`) writes the current run's FID.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from sagan import paths
from sagan.atomic import write_json
from sagan.errors import SaganError
from sagan.metrics import results
from sagan.params import Params

DEFAULT_TOLERANCE = 0.15
GAP_CLOSED_MIN = 0.5  # "most of the gap"
PROTOCOL_KEYS = ("n_gen", "n_ref", "reference_split", "weights_kind", "weights_sha256", "preprocessing")


def read_json(path: Path) -> dict:
    try:
        return json.loads(paths.require(path).read_text())
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for bytes that are no text
        raise paths.bad_input(path, f"not valid JSON ({exc})") from exc


BASELINE_HINT = "fix it, or rewrite it from the current run with `make update-baseline`"


def _number_problem(data: dict, key: str) -> str | None:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{key!r} is {value!r}, not a number"
    return None


def read_baseline(path: Path) -> dict:
    """The baseline with its FID, tolerance and every protocol key; else one line naming the file and key."""
    baseline = read_json(path)
    if not isinstance(baseline, dict):
        raise SaganError(f"{path}: not a JSON object", hint=BASELINE_HINT)
    for key in ("fid", "tolerance", "protocol"):
        if key not in baseline:
            raise SaganError(f"{path}: missing {key!r}", hint=BASELINE_HINT)
    if not isinstance(baseline["protocol"], dict):
        raise SaganError(f"{path}: 'protocol' is {baseline['protocol']!r}, not an object", hint=BASELINE_HINT)
    for key in PROTOCOL_KEYS:
        if key not in baseline["protocol"]:
            raise SaganError(f"{path}: missing 'protocol.{key}'", hint=BASELINE_HINT)
    for key in ("fid", "tolerance"):
        problem = _number_problem(baseline, key)
        if problem:
            raise SaganError(f"{path}: {problem}", hint=BASELINE_HINT)
    return baseline


def gap_closed(metrics: dict) -> float:
    """How much of the FID gap from the untrained generator (ceiling) to real images (floor) the
    trained generator closes: 1 at the floor, 0 at the ceiling."""
    ceiling, floor = metrics["ceiling"]["fid"], metrics["floor"]["fid"]
    if ceiling <= floor:
        raise paths.bad_input(paths.FID_BOUNDS, f"its ceiling FID {ceiling:.4f} is not above its floor {floor:.4f}: "
                                                f"the FID cannot tell the untrained generator from real images")
    return (ceiling - metrics["fid"]) / (ceiling - floor)


def kept_tolerance(baseline_path: Path) -> float:
    """The tolerance of the baseline that --update rewrites, or the default where it has none that
    is a number (no file, an empty or corrupt one: what --update is there to repair)."""
    try:
        old = read_json(baseline_path) if baseline_path.is_file() else {}
    except SaganError:
        return DEFAULT_TOLERANCE
    if isinstance(old, dict) and "tolerance" in old and _number_problem(old, "tolerance") is None:
        return old["tolerance"]
    return DEFAULT_TOLERANCE


def update_baseline(metrics: dict, baseline_path: Path, params: Params) -> None:
    write_json(baseline_path, {
        "fid": metrics["fid"],
        "tolerance": kept_tolerance(baseline_path),
        "profile": params.mlflow.profile,
        "protocol": {k: metrics[k] for k in PROTOCOL_KEYS},
    })
    print(f"sagan check-fid: baseline {baseline_path} set to FID {metrics['fid']:.4f}")


def check(params: Params, baseline_path: Path, update: bool) -> None:
    """The gate on the pipeline's metrics: raise unless they pass against `baseline_path`; `update`
    rewrites the baseline from them instead."""
    metrics = results.read()
    if update:
        update_baseline(metrics, baseline_path, params)
        return
    if not baseline_path.is_file():
        raise SaganError(f"{baseline_path}: no FID baseline", hint="create it with `make update-baseline`")
    baseline = read_baseline(baseline_path)
    for key in PROTOCOL_KEYS:
        if metrics[key] != baseline["protocol"][key]:
            source = paths.METRICS_PROTOCOL if key in results.PROTOCOL_KEYS else paths.METRICS
            raise SaganError(f"{source}: {key}={metrics[key]!r} but {baseline_path} was measured with "
                             f"{baseline['protocol'][key]!r}; the FIDs are not comparable",
                             hint="run the smoke profile (`sagan params --profile smoke`), or update the baseline")
    fid, base, tol = float(metrics["fid"]), float(baseline["fid"]), float(baseline["tolerance"])
    limit = base * (1 + tol)
    print(f"sagan check-fid: FID {fid:.4f}, baseline {base:.4f}, tolerance {tol:.0%} (limit {limit:.4f})")
    if fid > limit:
        raise SaganError(f"FID regressed: {fid:.4f} > baseline {base:.4f} x (1 + tolerance {tol}) = {limit:.4f}",
                         hint="if the change is intended, `make update-baseline` and commit the file")
    closed = gap_closed(metrics)
    print(f"sagan check-fid: FID floor {metrics['floor']['fid']:.4f} (training images), ceiling "
          f"{metrics['ceiling']['fid']:.4f} (untrained generator): {closed:.0%} of the gap closed, "
          f"{GAP_CLOSED_MIN:.0%} required")
    if closed < GAP_CLOSED_MIN:
        raise SaganError(f"the trained generator (FID {fid:.4f}) closes {closed:.0%} of the gap between the untrained "
                         f"generator ({metrics['ceiling']['fid']:.4f}) and real images ({metrics['floor']['fid']:.4f}); "
                         f"{GAP_CLOSED_MIN:.0%} required",
                         hint=f"training did not learn enough: check the losses in {paths.LOSSES_CSV}")
    print("sagan check-fid: OK")
