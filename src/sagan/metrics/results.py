"""One evaluation of a generator (docs/contracts.md, evaluate) and its two files: Evaluation, written
by `sagan evaluate` and read by `sagan report`, `sagan check-fid` and the study summary.

- reports/metrics.json: numbers only (the floor and ceiling as rows of numbers). It is what `dvc
  metrics show/diff` and `dvc exp show` tabulate, so every value is a column a user can sort by
  (`fid`, `floor.fid`, ...); git tracks it (docs/architecture.md).
- reports/metrics_protocol.json: how those numbers were measured (extractor, weights, split,
  preprocessing, synthetic data), which training run they measure (`run_id`), and the sha256 of
  the metrics.json it belongs to, so a pair from two evaluations (a kill between the two writes,
  a hand edit) is refused instead of reported.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sagan import paths
from sagan.atomic import write_json
from sagan.digest import file_digest
from sagan.run_record import RunRecord

# The numbers every evaluation has: `floor.fid` is the `fid` of its `floor` row.
REQUIRED_NUMBERS = ("fid", "n_gen", "n_ref", "wall_time_s", "floor.fid", "ceiling.fid")


@dataclass(frozen=True)
class Evaluation:
    # metrics.json: every score (`fid`, `kid_mean`, `swd_<px>`, ...), the sample counts, wall_time_s
    # and the rows `floor` and `ceiling`; a score that was not measured (KID with fid.kid off,
    # precision/recall of too few images) is absent, never null.
    numbers: dict
    # metrics_protocol.json, beside the metrics_sha256 that pairs it with its metrics.json:
    run_id: str | None  # the training run measured (run.json's mlflow_run_id); None for a foreign generator
    generator: str  # evaluate.generator: last or best
    reference_split: str
    extractor: str
    weights_sha256: str
    weights_kind: str  # a label: whether the weights are the official ones is judged by weights_sha256
    preprocessing: dict
    synthetic_data: bool
    metric_protocols: dict

    @classmethod
    def from_dict(cls, values: dict) -> Evaluation:
        """The evaluation whose PROTOCOL_FIELDS are those of `values` and whose numbers are the rest,
        None values left out."""
        return cls(numbers=_numbers({k: v for k, v in values.items() if k not in PROTOCOL_FIELDS}),
                   **{k: values[k] for k in PROTOCOL_FIELDS})

    def write(self, outputs: paths.RunOutputs) -> None:
        """metrics.json, then the protocol with its sha256: a kill between the two leaves a pair that read refuses."""
        write_json(outputs.metrics, self.numbers)
        write_json(outputs.metrics_protocol, {**{k: getattr(self, k) for k in PROTOCOL_FIELDS},
                                              "metrics_sha256": file_digest(outputs.metrics)})

    @classmethod
    def read(cls, outputs: paths.RunOutputs) -> Evaluation:
        """The evaluation in `outputs`; a missing key, a number that is not one, or a pair from two
        evaluations is one line naming the file."""
        numbers, protocol = paths.read_json_object(outputs.metrics), paths.read_json_object(outputs.metrics_protocol)
        flat = dict(leaves(numbers))
        for path, keys, have in ((outputs.metrics, REQUIRED_NUMBERS, flat),
                                 (outputs.metrics_protocol, (*PROTOCOL_FIELDS, "metrics_sha256"), protocol)):
            absent = sorted(set(keys) - set(have))
            if absent:
                raise paths.bad_input(path, f"missing {', '.join(map(repr, absent))}")
        for key, value in flat.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise paths.bad_input(outputs.metrics, f"{key!r} is {value!r}, not a finite number")
        if protocol["metrics_sha256"] != file_digest(outputs.metrics):
            raise paths.bad_input(outputs.metrics, f"is not the file {outputs.metrics_protocol} describes (its sha256 "
                                                   f"differs): the two come from different evaluations")
        return cls(numbers=numbers, **{k: protocol[k] for k in PROTOCOL_FIELDS})

    def check_run(self, record: RunRecord, outputs: paths.RunOutputs) -> None:
        """Refuse an evaluation of another training run than `record`, the run.json of `outputs`: a
        generator evaluated before its newest run finished must not be reported as that run's."""
        if self.run_id != record.mlflow_run_id:
            raise paths.bad_input(outputs.metrics_protocol, f"measures run {self.run_id}, but {outputs.run_record} "
                                                            f"is from run {record.mlflow_run_id}")

    def gap_closed(self, key: str) -> float | None:
        """How much of the distance from the untrained generator (the ceiling) to real training
        images (the floor) this generator covers on `key`, a metric that is lower when better: 1 at
        the floor, 0 at the ceiling. None where there is no such scale: this run or a bound lacks
        the metric (KID with fid.kid off), or the ceiling is not above the floor (the metric cannot
        tell the untrained generator from real images)."""
        ours, floor, ceiling = self.numbers.get(key), self.numbers["floor"].get(key), self.numbers["ceiling"].get(key)
        if None in (ours, floor, ceiling) or ceiling <= floor:
            return None
        return (ceiling - ours) / (ceiling - floor)


# metrics_protocol.json's fields (beside metrics_sha256): every field of an Evaluation but its numbers.
PROTOCOL_FIELDS = tuple(field.name for field in dataclasses.fields(Evaluation) if field.name != "numbers")


def _numbers(values: dict) -> dict:
    return {k: _numbers(v) if isinstance(v, dict) else v for k, v in values.items() if v is not None}


def leaves(values: dict, prefix: str = ""):
    """(dotted key, value) of every non-dict value, as DVC flattens them (`floor.fid`)."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
