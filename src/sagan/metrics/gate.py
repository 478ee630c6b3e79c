"""`sagan check-fid`: the FID regression gate that CI runs on the smoke profile.

It fails when
- this run's FID (reports/metrics.json, read with its protocol as a sagan.metrics.results
  Evaluation) exceeds the baseline by more than its tolerance, or
- the trained generator does not close most of the gap between the untrained generator and the
  real training images: (ceiling - FID) / (ceiling - floor) must reach GAP_CLOSED_MIN, with the
  ceiling and floor of data/fid/bounds.json that evaluate copied beside the FID (same protocol).

The baseline (tests/baselines/smoke.json) records the FID and the protocol it was measured with;
a run measured with another protocol (sample counts, extractor weights) is refused as not
comparable. `sagan check-fid --update` (or `make update-baseline`) writes the current run's FID.
"""
from __future__ import annotations

import math
from pathlib import Path

from sagan import paths
from sagan.atomic import write_json
from sagan.errors import SaganError
from sagan.metrics.results import PROTOCOL_FIELDS, Evaluation
from sagan.params import Params

# Wide on purpose: one 400-step smoke run is one draw of a wide distribution, moved by the CPU's
# float rounding and the seed (measured in docs/benchmarks.md, "How far one smoke FID moves").
DEFAULT_TOLERANCE = 1.5
GAP_CLOSED_MIN = 0.5  # "most of the gap"
# What the baseline records of how its FID was measured; a run measured otherwise is not comparable.
BASELINE_PROTOCOL_KEYS = ("n_gen", "n_ref", "reference_split", "weights_kind", "weights_sha256", "preprocessing")
BASELINE_HINT = "fix it, or rewrite it from the current run with `make update-baseline`"


def _number_problem(data: dict, key: str) -> str | None:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{key!r} is {value!r}, not a number"
    return None


def read_baseline(path: Path) -> dict:
    """The baseline with its FID, tolerance and every protocol key; else one line naming the file and key."""
    try:
        baseline = paths.read_json_object(path)
    except SaganError as exc:  # not JSON, or not an object: a file of no stage, which --update repairs
        raise SaganError(str(exc), hint=BASELINE_HINT) from exc
    for key in ("fid", "tolerance", "protocol"):
        if key not in baseline:
            raise SaganError(f"{path}: missing {key!r}", hint=BASELINE_HINT)
    if not isinstance(baseline["protocol"], dict):
        raise SaganError(f"{path}: 'protocol' is {baseline['protocol']!r}, not an object", hint=BASELINE_HINT)
    for key in BASELINE_PROTOCOL_KEYS:
        if key not in baseline["protocol"]:
            raise SaganError(f"{path}: missing 'protocol.{key}'", hint=BASELINE_HINT)
    for key in ("fid", "tolerance"):
        problem = _number_problem(baseline, key)
        if problem:
            raise SaganError(f"{path}: {problem}", hint=BASELINE_HINT)
    return baseline


def measured_with(evaluation: Evaluation) -> dict:
    """The baseline's protocol keys as `evaluation` has them: the sample counts are numbers of
    metrics.json, the rest fields of metrics_protocol.json."""
    return {key: getattr(evaluation, key) if key in PROTOCOL_FIELDS else evaluation.numbers[key]
            for key in BASELINE_PROTOCOL_KEYS}


def kept_tolerance(baseline_path: Path) -> float:
    """The tolerance of the baseline that --update rewrites, or the default where it has none that
    is a number (no file, an empty or corrupt one: what --update is there to repair)."""
    try:
        old = paths.read_json_object(baseline_path) if baseline_path.is_file() else {}
    except SaganError:
        return DEFAULT_TOLERANCE
    if "tolerance" in old and _number_problem(old, "tolerance") is None:
        return old["tolerance"]
    return DEFAULT_TOLERANCE


def update_baseline(evaluation: Evaluation, baseline_path: Path, params: Params) -> None:
    write_json(baseline_path, {
        "fid": evaluation.numbers["fid"],
        "tolerance": kept_tolerance(baseline_path),
        "profile": params.mlflow.profile,
        "protocol": measured_with(evaluation),
    })
    print(f"sagan check-fid: baseline {baseline_path} set to FID {evaluation.numbers['fid']:.4f}")


def check(params: Params, outputs: paths.RunOutputs, baseline_path: Path, update: bool) -> None:
    """The gate on the evaluation in `outputs`: raise unless it passes against `baseline_path`;
    `update` rewrites the baseline from it instead."""
    evaluation = Evaluation.read(outputs)
    if update:
        update_baseline(evaluation, baseline_path, params)
        return
    if not baseline_path.is_file():
        raise SaganError(f"{baseline_path}: no FID baseline", hint="create it with `make update-baseline`")
    baseline = read_baseline(baseline_path)
    for key, value in measured_with(evaluation).items():
        if value != baseline["protocol"][key]:
            source = outputs.metrics_protocol if key in PROTOCOL_FIELDS else outputs.metrics
            raise SaganError(f"{source}: {key}={value!r} but {baseline_path} was measured with "
                             f"{baseline['protocol'][key]!r}; the FIDs are not comparable",
                             hint="run the smoke profile (`sagan params --profile smoke`), or update the baseline")
    numbers = evaluation.numbers
    fid, base, tol = float(numbers["fid"]), float(baseline["fid"]), float(baseline["tolerance"])
    limit = base * (1 + tol)
    print(f"sagan check-fid: FID {fid:.4f}, baseline {base:.4f}, tolerance {tol:.0%} (limit {limit:.4f})")
    if fid > limit:
        raise SaganError(f"FID regressed: {fid:.4f} > baseline {base:.4f} x (1 + tolerance {tol}) = {limit:.4f}",
                         hint="if the change is intended, `make update-baseline` and commit the file")
    floor, ceiling = numbers["floor"]["fid"], numbers["ceiling"]["fid"]
    closed = evaluation.gap_closed("fid")
    if closed is None:
        raise paths.bad_input(paths.FID_BOUNDS, f"its ceiling FID {ceiling:.4f} is not above its floor {floor:.4f}: "
                                                f"the FID cannot tell the untrained generator from real images")
    print(f"sagan check-fid: FID floor {floor:.4f} (training images), ceiling {ceiling:.4f} (untrained generator): "
          f"{closed:.0%} of the gap closed, {GAP_CLOSED_MIN:.0%} required")
    if closed < GAP_CLOSED_MIN:
        raise SaganError(f"the trained generator (FID {fid:.4f}) closes {closed:.0%} of the gap between the untrained "
                         f"generator ({ceiling:.4f}) and real images ({floor:.4f}); {GAP_CLOSED_MIN:.0%} required",
                         hint=f"training did not learn enough: check the losses in {outputs.losses_csv}")
    print("sagan check-fid: OK")
