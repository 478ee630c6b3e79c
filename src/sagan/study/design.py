"""A study: training runs ("cells") over params.yaml that answer one question, declared in one file.

`studies/NAME/study.yaml`:

    question: Is the improved profile better than the paper's configuration?
    base:                     # params every cell shares, on top of params.yaml
      mlflow: {experiment: sagan-celeba-profiles}
    axes:                     # the variants: every combination of the axes' values ...
      profile: [paper, improved]      # a configs/ overlay (`paper`: params.yaml as it is)
      train.lr_d: [1.0e-4, 2.0e-4]    # or any dotted param key
    variants:                 # ... or named variants, each a mapping of dotted params (not both)
      none: {model.attention: false}
    seeds: [0, 1, 2, 3, 4]    # train.seed: every variant runs at every seed
    baseline: profile-paper   # the variant every other is compared with, seed by seed

A variant of `axes` is named by its values (`profile-paper`, `lr_d-0.0001`, joined by `_` over
several axes); a cell is a variant at a seed, `VARIANT-seedS`. A cell's params are params.yaml,
then its profile's changes, then `base`, then its other values, then its seed, validated like any
params file; its outputs live in studies/NAME/cells/CELL/ (paths.RunOutputs), so `sagan train
--study NAME --cell CELL` and `sagan evaluate --study NAME --cell CELL` run one cell and nothing a
cell writes is shared with another run.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import itertools
from functools import cached_property
from pathlib import Path

from sagan import paths, profiles, stages
from sagan.atomic import write_json
from sagan.errors import SaganError
from sagan.params import Params, flatten, parse_params, parse_yaml

KEYS = ("question", "base", "axes", "variants", "seeds", "baseline")
PROFILE = "profile"  # the axis (or variant key) that selects a configs/ overlay
SEED_KEY = "train.seed"
# The stages that run once, from params.yaml alone, for every cell. A base that changed what they
# read would score the cells on data, a reference or bounds that are not theirs. Their model and
# train keys are the exception: fid_bounds' ceiling, the paper model untrained, is the one scale
# every cell is measured on.
SHARED_STAGES = ("download", "prepare", "split", "fid_ref", "fid_bounds")


def _merge(into: dict, changes: dict) -> dict:
    out = dict(into)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _nested(dotted: dict) -> dict:
    """{"train.lr_d": 1e-4} -> {"train": {"lr_d": 1e-4}}."""
    out: dict = {}
    for key, value in dotted.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def value_name(value) -> str:
    """A value as it appears in a cell name: `true`, `0.0001`, `hinge`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One configuration of the study: its name and its values (dotted param keys, or `profile`)."""

    name: str
    values: dict


@dataclasses.dataclass(frozen=True)
class StudyCell:
    """One cell: a variant at a seed, its params; where it writes and how it is tagged."""

    study: str
    variant: Variant
    seed: int
    params: Params

    @property
    def name(self) -> str:
        return f"{self.variant.name}-seed{self.seed}"

    @property
    def outputs(self) -> paths.RunOutputs:
        return paths.RunOutputs(paths.study_cell_dir(self.study, self.name))

    @property
    def record(self) -> dict:
        """What run.json records of the cell (the study's results table reads it back)."""
        return {"name": self.study, "cell": self.name, "variant": self.variant.name, "seed": self.seed,
                "values": self.variant.values}

    @property
    def tags(self) -> dict[str, str]:
        """The MLflow tags of the cell's training run: the UI groups and compares cells by any axis."""
        return {"mlflow.runName": self.name, "sagan.study": self.study, "sagan.study.cell": self.name,
                "sagan.study.variant": self.variant.name, "sagan.study.seed": str(self.seed),
                **{f"sagan.study.{key}": value_name(value) for key, value in self.variant.values.items()}}


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    question: str
    base: dict  # the partial params mapping every cell shares
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...]
    baseline: str  # a variant's name
    params: Params  # params.yaml

    @property
    def file(self) -> Path:
        return paths.study_file(self.name)

    @cached_property
    def cells(self) -> list[StudyCell]:
        """Every variant at every seed, the baseline's first."""
        ordered = sorted(self.variants, key=lambda v: v.name != self.baseline)
        return [StudyCell(self.name, v, seed, self._cell_params(v, seed)) for v in ordered for seed in self.seeds]

    def _cell_params(self, variant: Variant, seed: int) -> Params:
        where = f"{self.file} (variant {variant.name}, seed {seed})"
        values = dict(variant.values)
        raw = dataclasses.asdict(self.params)
        if PROFILE in values:
            raw = _merge(raw, _profile_changes(values.pop(PROFILE), where))
        raw = _merge(_merge(raw, self.base), _nested({**values, SEED_KEY: seed}))
        return parse_params(raw, where=where)

    def cell(self, name: str) -> StudyCell:
        paths.plain_name(name, "--cell")
        by_name = {cell.name: cell for cell in self.cells}
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            raise SaganError(f"{self.file}: no cell '{name}' in the study",
                             hint=f"did you mean '{close[0]}'?" if close else f"cells: {', '.join(by_name)}")
        return by_name[name]


def _profile_changes(name, where: str) -> dict:
    """A profile's changes as a params mapping (its runs labelled with its name), `paper`: none."""
    if not isinstance(name, str):
        raise SaganError(f"{where}: '{PROFILE}' must name a profile, got {name!r}")
    if name == profiles.PAPER:
        return {}
    try:
        return profiles.read_profile(name).labelled_changes
    except SaganError as exc:  # the profile file's own error, named from the study that applies it
        raise SaganError(f"{where}: {exc}") from exc


def _check_key(key, where: str, known: set[str]) -> str:
    if key == PROFILE:
        return key
    if not isinstance(key, str) or key not in known:
        close = difflib.get_close_matches(str(key), sorted(known | {PROFILE}), n=1)
        raise SaganError(f"{where}: unknown param '{key}'",
                         hint=f"did you mean '{close[0]}'?" if close else "a dotted param key, e.g. train.lr_d, "
                              f"or '{PROFILE}'")
    if key == SEED_KEY:
        raise SaganError(f"{where}: '{SEED_KEY}' is the study's `seeds`, not a value of its variants")
    return key


def _axis_variants(raw, where: str, known: set[str]) -> tuple[Variant, ...]:
    if not isinstance(raw, dict) or not raw:
        raise SaganError(f"{where}: 'axes' must map params to lists of values",
                         hint="e.g. axes: {profile: [paper, improved]} or axes: {train.lr_d: [1.0e-4, 2.0e-4]}")
    for key, values in raw.items():
        _check_key(key, f"{where}: axes", known)
        if not isinstance(values, list) or not values:
            raise SaganError(f"{where}: axis '{key}' needs a non-empty list of values")
        if len({value_name(v) for v in values}) != len(values):
            raise SaganError(f"{where}: axis '{key}' lists a value twice: {values}")
    short = {key: key.rpartition(".")[2] for key in raw}
    if len(set(short.values())) != len(short):
        raise SaganError(f"{where}: two axes end in the same name ({', '.join(raw)}): cell names would not tell "
                         "them apart")
    variants = []
    for combo in itertools.product(*raw.values()):
        values = dict(zip(raw, combo))
        name = "_".join(f"{short[key]}-{value_name(value)}" for key, value in values.items())
        variants.append(Variant(name, values))
    return tuple(variants)


def _named_variants(raw, where: str, known: set[str]) -> tuple[Variant, ...]:
    if not isinstance(raw, dict) or not raw:
        raise SaganError(f"{where}: 'variants' must map names to mappings of params",
                         hint="e.g. variants: {none: {model.attention: false}}")
    variants = []
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise SaganError(f"{where}: variant '{name}' must be a mapping of dotted params to values")
        for key in values:
            _check_key(key, f"{where}: variant '{name}'", known)
        variants.append(Variant(str(name), dict(values)))
    same = [(a.name, b.name) for a, b in itertools.combinations(variants, 2) if a.values == b.values]
    if same:
        raise SaganError(f"{where}: variants '{same[0][0]}' and '{same[0][1]}' are the same cell")
    return tuple(variants)


def _seeds(raw, where: str) -> tuple[int, ...]:
    if not (isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in raw)):
        raise SaganError(f"{where}: 'seeds' must be a non-empty list of integers >= 0 (train.seed), got {raw!r}")
    if len(set(raw)) != len(raw):
        raise SaganError(f"{where}: 'seeds' lists a seed twice: {raw}")
    return tuple(raw)


def load_study(name: str, params: Params) -> Study:
    """The study `name` (studies/NAME/study.yaml) over `params`, with every cell's params
    validated: an unknown key, a value of the wrong type, a duplicate cell or an empty grid is
    one line naming the file."""
    path = paths.study_file(paths.plain_name(name, "--study"))
    if not path.is_file():
        known = study_names()
        raise SaganError(f"{path}: study '{name}' not found",
                         hint=f"known studies: {', '.join(known)}" if known else "run from the project root")
    where = str(path)
    raw = parse_yaml(path.read_text(), where)
    if not isinstance(raw, dict):
        raise SaganError(f"{where}: expected a mapping", hint=f"a study file has {', '.join(KEYS)}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), KEYS, n=1)
        raise SaganError(f"{where}: unknown key '{unknown[0]}'",
                         hint=f"did you mean '{close[0]}'?" if close else f"a study file has {', '.join(KEYS)}")
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        raise SaganError(f"{where}: 'question' must say in one sentence what the study answers")
    base = raw.get("base") or {}
    parse_params(base, where=f"{where} base", partial=True)  # an unknown key in base: one line, here
    _check_base_keeps_shared_stages(base, params, path)
    known = set(flatten(params))
    if ("axes" in raw) == ("variants" in raw):
        raise SaganError(f"{where}: give the cells as 'axes' (every combination) or as 'variants' (named), one of them")
    variants = (_axis_variants(raw["axes"], where, known) if "axes" in raw
                else _named_variants(raw["variants"], where, known))
    names = [v.name for v in variants]
    for variant in names:
        paths.plain_name(variant, f"{where}: variant")
    baseline = raw.get("baseline")
    if baseline not in names:
        raise SaganError(f"{where}: 'baseline' must name one of the variants ({', '.join(names)}), got {baseline!r}",
                         hint="every other variant is compared with it, seed by seed")
    study = Study(name, question.strip(), base, variants, _seeds(raw.get("seeds"), where), baseline, params)
    study.cells  # every cell's params validated now
    return study


def study_names() -> list[str]:
    return sorted(p.parent.name for p in paths.STUDIES_DIR.glob(f"*/{paths.STUDY_FILE_NAME}"))


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


def write_cell_params(study: Study) -> list[Path]:
    """Each cell's params file (paths.cell_params_file), rewritten only where it changed, so that
    DVC reruns only the cells whose params changed; the files written."""
    written = []
    for cell in study.cells:
        path = paths.cell_params_file(study.name, cell.name)
        flat = flatten(cell.params)
        if not path.is_file() or json.loads(path.read_text()) != json.loads(json.dumps(flat)):
            write_json(path, flat)
            written.append(path)
    return written


def profile_files(study: Study) -> list[Path]:
    """The profile files (configs/NAME.yaml) the study's variants apply."""
    names = {v.values[PROFILE] for v in study.variants if PROFILE in v.values} - {profiles.PAPER}
    return sorted(profiles.PROFILES_DIR / f"{name}.yaml" for name in names)


def resolve_cell(params: Params, study: str | None, cell: str | None) -> StudyCell | None:
    """The cell that `--study STUDY --cell CELL` names, or None (neither given: the paper's pipeline)."""
    if not (study or cell):
        return None
    if not (study and cell):
        raise SaganError("--study and --cell go together", hint="e.g. --study attention --cell none-seed0")
    return load_study(study, params).cell(cell)
