# The pipeline of docs/architecture.md for Snakemake; dvc.yaml is the same pipeline for DVC.
# Paths come from sagan.paths, and each rule's param keys and code deps from its stage module
# (sagan.stages), so nothing here repeats a declaration; tests/test_orchestration.py checks that
# dvc.yaml, which has to spell them, agrees.
import dataclasses
import sys

from sagan import paths, stages
from sagan.errors import SaganError
from sagan.params import DEFAULT_PARAMS, load_params

# Validate params.yaml as `sagan` does: a typo stops `snakemake -n` with sagan's one-line error.
try:
    PARAMS = dataclasses.asdict(load_params(DEFAULT_PARAMS))
except SaganError as exc:
    sys.exit(f"snakemake: error: {exc}")


def stage_params(stage):
    """The rule's params: the stage's declared keys (`fid.weights`, or a whole section such as
    `train`) and their values, so a changed value reruns the rule."""
    def value(dotted):
        section, _, key = dotted.partition(".")
        return PARAMS[section][key] if key else PARAMS[section]

    return {key: value(key) for key in stages.param_keys(stage)}


def sagan_command(stage):
    return f"sagan {stages.command(stage)} --params {DEFAULT_PARAMS} 2>&1 | tee {{log}}"


def all_cores(wildcards):
    """Threads of the rules that keep every core busy (torch, prepare's workers). Snakemake sets
    OMP_NUM_THREADS to a job's threads, 1 by default, which ran train and FID on one core and
    gave other float summation orders than `dvc repro`. Evaluated per job, so a dry run without
    --cores still parses; the SLURM profile sets these threads itself (set-threads)."""
    return workflow.cores


# Tag every run with its orchestrator (DVC stages are recognised by DVC's own env vars).
shell.prefix("export SAGAN_ORCHESTRATOR=snakemake; ")


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/fid.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.report.output.markdown,
        rules.report.output.html,
