# The pipeline of docs/architecture.md for Snakemake; dvc.yaml is the same pipeline for DVC.
# Each rule runs the same `sagan STAGE` command with the same inputs, outputs and param keys as
# its DVC stage (tests/test_orchestration.py checks the two agree).
from pathlib import Path

configfile: "params.yaml"


def param_keys(*dotted):
    """Rule params named by their dotted params.yaml keys, so a change to one reruns the rule."""
    values = {}
    for key in dotted:
        value = config
        for part in key.split("."):
            value = value[part]
        values[key] = value
    return values


def sources(*paths):
    """A stage's own source modules (directories expand to their .py files)."""
    files = []
    for p in map(Path, paths):
        files += sorted(str(f) for f in p.glob("*.py")) if p.is_dir() else [str(p)]
    return files


def all_cores(wildcards):
    """Threads of the rules that keep every core busy (torch, prepare's workers). Snakemake sets
    OMP_NUM_THREADS to a job's threads, 1 by default, which ran train and FID on one core and
    gave other float summation orders than `dvc repro`. Evaluated per job, so a dry run without
    --cores still parses; the SLURM profile sets these threads itself (set-threads)."""
    return workflow.cores


# Tag every run with its orchestrator (DVC stages are recognised by DVC's own env vars).
shell.prefix("export SAGAN_ORCHESTRATOR=snakemake; ")


onstart:
    # Create the MLflow store once, before any parallel job could race to create it.
    shell("python -m sagan.tracking --params params.yaml")


include: "workflow/rules/data.smk"
include: "workflow/rules/fid.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "reports/report.md",
        "reports/report.html",
