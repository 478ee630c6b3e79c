"""reports/train/run.json (docs/contracts.md, train): what one training run was. `sagan train` writes
it and evaluate, report, the study summary and tracking read it, all through RunRecord."""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass

from sagan import paths
from sagan.atomic import write_json

# How a field's type is named in a message: run.json is JSON.
_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
               type(None): "null"}


@dataclass(frozen=True)
class RunRecord:
    mlflow_run_id: str  # the training's MLflow run: every file of the run carries it
    mlflow_experiment: str
    tracking_uri: str  # as configured, redacted (sagan.tracking.run_metadata, like the provenance below)
    steps: int
    epochs: int
    wall_time_s: float
    img_per_s: float
    device: str
    profile: str
    git_commit: str
    data_fingerprint: str
    synthetic_data: bool
    orchestrator: str
    dvc_experiment: str  # empty outside `dvc exp run`
    best_step: int | None  # the evaluation during training with the lowest FID; null without evaluations
    best_fid: float | None
    params: dict  # sagan.params.flatten of the run's params: readers take them from here, not params.yaml
    study: dict | None = None  # a study cell's run: its study, cell and axis values; no key otherwise

    def write(self, path: str | os.PathLike) -> None:
        record = dataclasses.asdict(self)
        if self.study is None:
            del record["study"]
        write_json(path, record)

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunRecord:
        """The record in `path`; a missing file, a missing field or a value of another type is one
        line naming the file. Keys it does not know are not read."""
        data = paths.read_json_object(path)
        fields = dataclasses.fields(cls)
        missing = [f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise paths.bad_input(path, f"missing {', '.join(map(repr, missing))}")
        values = {f.name: data.get(f.name, f.default) for f in fields}
        for name, annotation in typing.get_type_hints(cls).items():
            allowed = typing.get_args(annotation) or (annotation,)
            if not _fits(values[name], allowed):
                raise paths.bad_input(path, f"{name!r} is {values[name]!r}, not "
                                            f"{' or '.join(_JSON_NAMES[t] for t in allowed)}")
        if not values["mlflow_run_id"]:
            raise paths.bad_input(path, "has no 'mlflow_run_id'")
        return cls(**values)


def _fits(value, allowed: tuple[type, ...]) -> bool:
    """Whether a JSON value has one of the `allowed` types: an integer is a number too, but
    true/false is no integer."""
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed) or (float in allowed and isinstance(value, int))
