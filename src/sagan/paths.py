"""Every stage output path, fixed by the contract in docs/architecture.md, which stage writes it,
and the one-line errors (and the JSON reader) for an input that is missing or bad.

The Snakefile imports these; dvc.yaml spells them once more (tests/test_orchestration.py checks
its literals against this module). All paths are relative to the project root (the working
directory).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sagan.errors import SaganError

# DVC's first stage validates params.yaml and writes this stamp ("ok"), which download, and through it
# every stage, depends on (dvc.yaml, stage `params`).
PARAMS_CHECKED = Path("data/params.checked")

RAW_DIR = Path("data/raw")
RAW_ZIP = RAW_DIR / "img_align_celeba.zip"
RAW_PARTITION = RAW_DIR / "list_eval_partition.txt"

PREPARED_DIR = Path("data/prepared")
MANIFEST = PREPARED_DIR / "manifest.parquet"
PREPARE_SUMMARY = PREPARED_DIR / "summary.json"

SPLIT_DIR = Path("data/split")
SPLIT_FILE = SPLIT_DIR / "split.parquet"

FID_DIR = Path("data/fid")
FID_REFERENCE = FID_DIR / "reference.npz"
FID_BOUNDS = FID_DIR / "bounds.json"


@dataclass(frozen=True)
class RunOutputs:
    """Where one training run and its evaluation write, under `root`: the paper's pipeline at the
    project root (the constants below), each cell of a study in a directory of its own
    (sagan.study), so that no two runs share a file."""

    root: Path = Path(".")

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def generator(self) -> Path:
        return self.models_dir / "generator.pt"

    @property
    def generator_best(self) -> Path:
        return self.models_dir / "generator_best.pt"

    @property
    def checkpoints_dir(self) -> Path:
        return self.models_dir / "checkpoints"

    @property
    def train_reports_dir(self) -> Path:
        return self.root / "reports" / "train"

    @property
    def losses_csv(self) -> Path:
        return self.train_reports_dir / "losses.csv"

    @property
    def samples_dir(self) -> Path:
        return self.train_reports_dir / "samples"

    @property
    def run_record(self) -> Path:
        return self.train_reports_dir / "run.json"

    @property
    def evals_csv(self) -> Path:
        return self.train_reports_dir / "evals.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "reports" / "metrics.json"

    @property
    def metrics_protocol(self) -> Path:
        return self.root / "reports" / "metrics_protocol.json"


RUN = RunOutputs()  # the paper's pipeline; a study cell's: RunOutputs(study_cell_dir(STUDY, CELL))

REPORTS_DIR = Path("reports")
REPORT_MD = REPORTS_DIR / "report.md"
REPORT_HTML = REPORTS_DIR / "report.html"
FIGURES_DIR = REPORTS_DIR / "figures"

# Studies (sagan.study): the declaration and each cell's outputs under studies/NAME/, the
# results and their report under reports/studies/NAME/.
STUDIES_DIR = Path("studies")
STUDY_FILE_NAME = "study.yaml"
STUDY_REPORTS_DIR = REPORTS_DIR / "studies"
# A study's or a cell's name is one directory (studies/NAME/, its cells/CELL/, reports/studies/NAME/),
# never a path: `--study ../x` would read and write outside the project. The Snakemake wildcards use it.
PLAIN_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"  # dots inside, for values: lr_d-0.0001


def plain_name(name: str, option: str) -> str:
    """`name` if it is a plain name, else the one line naming the `option` it came from."""
    if not re.fullmatch(PLAIN_NAME, name):
        raise SaganError(f"{option} {name!r}: not a plain name",
                         hint="letters, digits, '_', '-' and '.', starting with a letter, digit or '_': it "
                              "names a directory")
    return name


def study_file(study: str) -> Path:
    return STUDIES_DIR / study / STUDY_FILE_NAME


def study_pipeline(study: str) -> Path:
    """The study's DVC pipeline (`dvc repro studies/NAME/dvc.yaml`)."""
    return STUDIES_DIR / study / "dvc.yaml"


def study_cells_dir(study: str) -> Path:
    return STUDIES_DIR / study / "cells"


def study_cell_dir(study: str, cell: str) -> Path:
    return study_cells_dir(study) / cell


def cell_params_file(study: str, cell: str) -> Path:
    """A cell's params, resolved and flattened (JSON), written by `sagan study --check`, the study's
    first DVC stage: the cell's DVC stages depend on it, so a change of params.yaml, the study's
    base, the cell's variant or its profile file reruns exactly the cells it changes."""
    return study_cell_dir(study, cell) / "params.json"


STUDY_HEADLINE_METRICS = ("fid", "recall")  # the metrics a study's report answers its question with


@dataclass(frozen=True)
class StudyReports:
    """What `sagan study` writes of one study."""

    study: str

    @property
    def root(self) -> Path:
        return STUDY_REPORTS_DIR / self.study

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def summary_csv(self) -> Path:
        return self.root / "summary.csv"

    @property
    def declaration(self) -> Path:
        """The study's name, question and baseline, for the reports that carry its section."""
        return self.root / "study.json"

    @property
    def figures(self) -> dict[str, Path]:
        """A figure per headline metric: each variant's mean and 95% interval, its seeds as dots."""
        return {metric: self.root / f"{metric}_by_variant.png" for metric in STUDY_HEADLINE_METRICS}

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"


# Caches that are not pipeline outputs (never hashed by an orchestrator).
STANDIN_WEIGHTS_DIR = Path(".cache/sagan")

# The `sagan` command that writes each output: every "missing or bad input" error names it.
WRITTEN_BY: dict[Path, str] = {
    PARAMS_CHECKED: "params",
    RAW_DIR: "download",
    PREPARED_DIR: "prepare",
    SPLIT_DIR: "split",
    FID_DIR: "fid-ref",
    FID_BOUNDS: "fid-bounds",
    RUN.models_dir: "train",
    RUN.train_reports_dir: "train",
    RUN.metrics: "evaluate",
    RUN.metrics_protocol: "evaluate",
    REPORT_MD: "report",
    REPORT_HTML: "report",
    FIGURES_DIR: "report",
    STUDY_REPORTS_DIR: "study",
}


def written_by(path: str | os.PathLike) -> str | None:
    """The stage that writes `path` (or the directory it lies in), or None for other files."""
    path = Path(path)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            return None
    for candidate in (path, *path.parents):
        if candidate in WRITTEN_BY:
            return WRITTEN_BY[candidate]
    return None


def bad_input(path: str | os.PathLike, problem: str) -> SaganError:
    """`PATH: PROBLEM; it is written by `sagan STAGE``, with the hint to (re)run that stage."""
    stage = written_by(path)
    if stage is None:
        return SaganError(f"{path}: {problem}")
    return SaganError(f"{path}: {problem}; it is written by `sagan {stage}`",
                      hint=f"run `sagan {stage}`, or the whole pipeline: `dvc repro`")


def require(path: str | os.PathLike) -> Path:
    """`path` if it exists, else the one-line error that names the stage that writes it."""
    path = Path(path)
    if not path.exists():
        raise bad_input(path, "not found")
    return path


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object in `path`: a missing file is require's error, one that is not a JSON object
    (a truncated write, bytes that are no text, a list) is one line by bad_input."""
    try:
        data = json.loads(require(path).read_bytes())
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for bytes that are no text
        raise bad_input(path, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise bad_input(path, "not a JSON object")
    return data
