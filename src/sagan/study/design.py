"""A study: a seeded grid of training runs ("cells") over params.yaml, declared in one file.

`studies/NAME/study.yaml` holds the params every cell shares (`base`, a partial params mapping
on top of params.yaml) and the axes of the grid. For the attention study:

    axes:
      attention: [sagan, biggan]   # model.attention_style; `none` is always in the grid
      placement: [2, 3, 4]         # model.attention_after
      seed: [0, 1, 2]              # train.seed

The cells are `none-seedS` (model.attention: false; no placement) for every seed, the baseline
that every other cell is compared with seed by seed, and `STYLE-afterP-seedS` for every style,
placement and seed. A cell's params are params.yaml, then `base`, then its axis values, validated
like any params file; its outputs live in studies/NAME/cells/CELL/ (paths.RunOutputs), so
`sagan train --study NAME --cell CELL` and `sagan evaluate --study NAME --cell CELL` run one cell
and nothing a cell writes is shared with another run.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
from functools import cached_property
from pathlib import Path

from sagan import paths, stages
from sagan.errors import SaganError
from sagan.params import ModelParams, Params, flatten, parse_params, parse_yaml

BASELINE = "none"  # the attention value of the cells without attention
STYLES = dataclasses.fields(ModelParams)[[f.name for f in dataclasses.fields(ModelParams)].index(
    "attention_style")].metadata["choices"]
AXES = ("attention", "placement", "seed")
# The stages that run once, from params.yaml alone, for every cell. A base that changed what they
# read would score the cells on data, a reference or bounds that are not theirs. Their model and
# train keys are the exception: fid_bounds' ceiling, the paper model untrained, is the one scale
# every cell is measured on.
SHARED_STAGES = ("download", "prepare", "split", "fid_ref", "fid_bounds")


def _placement_ok(value) -> bool:
    check = {f.name: f for f in dataclasses.fields(ModelParams)}["attention_after"].metadata["check"]
    return isinstance(value, int) and not isinstance(value, bool) and check(value)


def _seed_ok(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# axis -> (is this value valid?, what a valid value is)
_AXIS_VALUES = {
    "attention": (lambda v: v in STYLES, f"one of {', '.join(STYLES)} (`{BASELINE}` is always in the grid)"),
    "placement": (_placement_ok, "an integer in [1, 4] (model.attention_after)"),
    "seed": (_seed_ok, "an integer >= 0 (train.seed)"),
}


@dataclasses.dataclass(frozen=True)
class CellGroup:
    """Cells named alike: one DVC matrix stage per step runs them (sagan.dvcfile)."""

    name: str
    axes: tuple[str, ...]  # the axes the group's cells vary over
    cell_name: str  # StudyCell.name as a DVC template over the axes' values


CELL_GROUPS = (CellGroup(BASELINE, ("seed",), f"{BASELINE}-seed${{item.seed}}"),
               CellGroup("attention", AXES, "${item.attention}-after${item.placement}-seed${item.seed}"))


@dataclasses.dataclass(frozen=True)
class StudyCell:
    """One cell: its name, its axis values and its params; where it writes and how it is tagged."""

    study: str
    attention: str  # BASELINE or a model.attention_style
    placement: int | None  # model.attention_after; None without attention
    seed: int
    params: Params

    @property
    def name(self) -> str:
        if self.attention == BASELINE:
            return f"{BASELINE}-seed{self.seed}"
        return f"{self.attention}-after{self.placement}-seed{self.seed}"

    @property
    def outputs(self) -> paths.RunOutputs:
        return paths.RunOutputs(paths.study_cell_dir(self.study, self.name))

    @property
    def record(self) -> dict:
        """What run.json records of the cell (the study's results table reads it back)."""
        return {"name": self.study, "cell": self.name, "attention": self.attention, "placement": self.placement,
                "seed": self.seed}

    @property
    def tags(self) -> dict[str, str]:
        """The MLflow tags of the cell's training run: the UI groups and compares cells by these."""
        return {"mlflow.runName": self.name, "sagan.study": self.study, "sagan.study.cell": self.name,
                "sagan.study.attention": self.attention,
                "sagan.study.placement": "-" if self.placement is None else str(self.placement),
                "sagan.study.seed": str(self.seed)}


def _merge(into: dict, changes: dict) -> dict:
    out = dict(into)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _overrides(attention: str, placement: int | None, seed: int) -> dict:
    model = ({"attention": False} if attention == BASELINE else
             {"attention": True, "attention_style": attention, "attention_after": placement})
    return {"model": model, "train": {"seed": seed}}


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    base: dict  # the partial params mapping every cell shares
    axes: dict[str, list]
    params: Params  # params.yaml

    @property
    def file(self) -> Path:
        return paths.study_file(self.name)

    @cached_property
    def cells(self) -> list[StudyCell]:
        """The baseline cells (one per seed), then every style x placement x seed."""
        seeds, grid = self.axes["seed"], itertools.product(self.axes["attention"], self.axes["placement"])
        combos = [(BASELINE, None, s) for s in seeds] + [(a, p, s) for a, p in grid for s in seeds]
        return [StudyCell(self.name, a, p, s, self._cell_params(a, p, s)) for a, p, s in combos]

    def _cell_params(self, attention: str, placement: int | None, seed: int) -> Params:
        raw = _merge(_merge(dataclasses.asdict(self.params), self.base), _overrides(attention, placement, seed))
        return parse_params(raw, where=f"{self.file} (cell attention={attention}, placement={placement}, seed={seed})")

    def cell(self, name: str) -> StudyCell:
        paths.plain_name(name, "--cell")
        by_name = {cell.name: cell for cell in self.cells}
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            raise SaganError(f"{self.file}: no cell '{name}' in the study",
                             hint=f"did you mean '{close[0]}'?" if close else f"cells: {', '.join(by_name)}")
        return by_name[name]


def _check_axes(raw, where: str) -> dict[str, list]:
    if not isinstance(raw, dict):
        raise SaganError(f"{where}: 'axes' must be a mapping of {', '.join(AXES)} to lists of values")
    for axis in raw:
        if axis not in AXES:
            close = difflib.get_close_matches(str(axis), AXES, n=1)
            raise SaganError(f"{where}: unknown axis '{axis}'",
                             hint=f"did you mean '{close[0]}'?" if close else f"the axes: {', '.join(AXES)}")
    for axis in AXES:
        values = raw.get(axis)
        if not isinstance(values, list) or not values:
            raise SaganError(f"{where}: axis '{axis}' needs a non-empty list of values")
        ok, expect = _AXIS_VALUES[axis]
        for value in values:
            if axis == "attention" and value == BASELINE:
                raise SaganError(f"{where}: axis 'attention': leave out '{BASELINE}': the cells without attention "
                                 "are in every study, as the baseline of the paired comparison")
            if not ok(value):
                raise SaganError(f"{where}: axis '{axis}': {value!r} is not {expect}")
        if len(set(values)) != len(values):
            raise SaganError(f"{where}: axis '{axis}' lists a value twice: {values}")
    return {axis: list(raw[axis]) for axis in AXES}


def load_study(name: str, params: Params) -> Study:
    """The study `name` (studies/NAME/study.yaml) over `params`, with every cell's params
    validated: an unknown axis, value or param is one line naming the file."""
    path = paths.study_file(paths.plain_name(name, "--study"))
    if not path.is_file():
        known = sorted(p.parent.name for p in paths.STUDIES_DIR.glob(f"*/{paths.STUDY_FILE_NAME}"))
        raise SaganError(f"{path}: study '{name}' not found",
                         hint=f"known studies: {', '.join(known)}" if known else "run from the project root")
    raw = parse_yaml(path.read_text(), str(path))
    if not isinstance(raw, dict) or set(raw) - {"base", "axes"}:
        extra = sorted(set(raw) - {"base", "axes"}) if isinstance(raw, dict) else []
        raise SaganError(f"{path}: " + (f"unknown key '{extra[0]}'" if extra else "expected a mapping"),
                         hint="a study file has `base` (params every cell shares) and `axes`")
    base = raw.get("base") or {}
    parse_params(base, where=f"{path} base", partial=True)  # an unknown key in base: one line, here
    _check_base_keeps_shared_stages(base, params, path)
    study = Study(name, base, _check_axes(raw.get("axes"), str(path)), params)
    study.cells  # every cell's params validated now
    return study


def _check_base_keeps_shared_stages(base: dict, params: Params, path: Path) -> None:
    """One line naming the first key of `base` that changes what a shared stage reads."""
    read_by = {key: stage for stage in SHARED_STAGES for key in stages.param_keys(stage)
               if key.split(".")[0] not in ("model", "train")}
    before = flatten(params)
    after = flatten(parse_params(_merge(dataclasses.asdict(params), base), where=f"{path} base"))
    for key in sorted(k for k in after if after[k] != before[k]):
        stage = next((s for prefix, s in read_by.items() if key == prefix or key.startswith(prefix + ".")), None)
        if stage:
            raise SaganError(f"{path}: base changes '{key}', which the shared stage {stage} reads once for "
                             f"every cell", hint="change it in params.yaml: the shared stages and every cell rerun")


def resolve_cell(params: Params, study: str | None, cell: str | None) -> StudyCell | None:
    """The cell that `--study STUDY --cell CELL` names, or None (neither given: the paper's pipeline)."""
    if not (study or cell):
        return None
    if not (study and cell):
        raise SaganError("--study and --cell go together", hint="e.g. --study attention --cell none-seed0")
    return load_study(study, params).cell(cell)
