"""Every stage output path, fixed by the contract in docs/architecture.md.

dvc.yaml and workflow/rules/*.smk spell the same paths; tests/test_orchestration.py checks
that they agree. All paths are relative to the project root (the working directory).
"""
from pathlib import Path

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

MODELS_DIR = Path("models")
GENERATOR = MODELS_DIR / "generator.pt"
CHECKPOINTS_DIR = MODELS_DIR / "checkpoints"

REPORTS_DIR = Path("reports")
TRAIN_REPORTS_DIR = REPORTS_DIR / "train"
LOSSES_CSV = TRAIN_REPORTS_DIR / "losses.csv"
SAMPLES_DIR = TRAIN_REPORTS_DIR / "samples"
RUN_RECORD = TRAIN_REPORTS_DIR / "run.json"
METRICS = REPORTS_DIR / "metrics.json"
REPORT_MD = REPORTS_DIR / "report.md"
REPORT_HTML = REPORTS_DIR / "report.html"
FIGURES_DIR = REPORTS_DIR / "figures"

# Caches that are not pipeline outputs (never hashed by an orchestrator).
STANDIN_WEIGHTS_DIR = Path(".cache/sagan")
