"""Every stage output path, fixed by the contract in docs/architecture.md, and which stage writes it.

The Snakefile imports these; dvc.yaml spells them once more (tests/test_orchestration.py checks
its literals against this module). All paths are relative to the project root (the working
directory).
"""
from __future__ import annotations

import os
from pathlib import Path

from sagan.errors import SaganError

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

MODELS_DIR = Path("models")
GENERATOR = MODELS_DIR / "generator.pt"
GENERATOR_BEST = MODELS_DIR / "generator_best.pt"
CHECKPOINTS_DIR = MODELS_DIR / "checkpoints"

REPORTS_DIR = Path("reports")
TRAIN_REPORTS_DIR = REPORTS_DIR / "train"
LOSSES_CSV = TRAIN_REPORTS_DIR / "losses.csv"
SAMPLES_DIR = TRAIN_REPORTS_DIR / "samples"
RUN_RECORD = TRAIN_REPORTS_DIR / "run.json"
EVALS_CSV = TRAIN_REPORTS_DIR / "evals.csv"
METRICS = REPORTS_DIR / "metrics.json"
METRICS_PROTOCOL = REPORTS_DIR / "metrics_protocol.json"
REPORT_MD = REPORTS_DIR / "report.md"
REPORT_HTML = REPORTS_DIR / "report.html"
FIGURES_DIR = REPORTS_DIR / "figures"

# Caches that are not pipeline outputs (never hashed by an orchestrator).
STANDIN_WEIGHTS_DIR = Path(".cache/sagan")

# The `sagan` command that writes each output: every "missing or bad input" error names it.
WRITTEN_BY: dict[Path, str] = {
    RAW_DIR: "download",
    PREPARED_DIR: "prepare",
    SPLIT_DIR: "split",
    FID_DIR: "fid-ref",
    FID_BOUNDS: "fid-bounds",
    MODELS_DIR: "train",
    TRAIN_REPORTS_DIR: "train",
    METRICS: "evaluate",
    METRICS_PROTOCOL: "evaluate",
    REPORT_MD: "report",
    REPORT_HTML: "report",
    FIGURES_DIR: "report",
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
