# The pipeline of docs/architecture.md for Snakemake; dvc.yaml is the same pipeline for DVC.
# Paths come from sagan.paths, and each rule's param keys and code deps from its command
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


def sagan_command(stage, extra=""):
    return f"sagan {stages.command(stage)} --params {DEFAULT_PARAMS}{' ' + extra if extra else ''} 2>&1 | tee {{log}}"


def all_cores(wildcards):
    """Threads of the rules that keep every core busy (torch, prepare's workers). Snakemake sets
    OMP_NUM_THREADS to a job's threads, 1 by default, which ran train and FID on one core and
    gave other float summation orders than `dvc repro`. Evaluated per job, so a dry run without
    --cores still parses; the SLURM profile sets these threads itself (set-threads)."""
    return workflow.cores


def gpus(ranks=1):
    """The GPU request of a job (train: one per rank, train.nproc_per_node): `ranks` of the gres
    that a cluster profile names in its config (`gpu_gres: gpu`, or `gpu:a100`), as the SLURM
    plugin's `gres` resource. Nothing without one: local runs and CPU-only clusters ask for none."""
    gres = config.get("gpu_gres") or ""
    return {"gres": f"{gres}:{ranks}"} if gres else {}


def check_cluster_profile():
    """Stop with one line while a profile still holds a placeholder (`your-account`,
    `your-gpu-partition`: workflow/profiles/slurm), before anything is submitted. The profile's
    default-resources and set-resources are known while the Snakefile is parsed; the executor is not."""
    settings = workflow.resource_settings
    found = [(name, res) for name, res in (settings.default_resources or {}).items()]
    found += [(f"{rule}:{name}", res) for rule, resources in (settings.overwrite_resources or {}).items()
              for name, res in resources.items()]
    for where, res in found:
        value = str(getattr(res, "raw", res)).strip("'\"")
        if value.startswith("your-"):
            sys.exit(f"snakemake: error: the cluster profile still has the placeholder {where}={value}; "
                     "set your account, partitions and GPU gres in workflow/profiles/slurm/config.yaml "
                     "(workflow/profiles/README.md: Snakemake on a SLURM cluster)")


check_cluster_profile()


# Tag every run with its orchestrator (DVC stages are recognised by DVC's own env vars). A prefix
# of our own replaces Snakemake's `set -euo pipefail`, which is repeated here: without pipefail
# `sagan X | tee {log}` exits with tee's status, and a failed stage would pass as done.
shell.prefix("set -euo pipefail; export SAGAN_ORCHESTRATOR=snakemake; ")


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/fid.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/study.smk"


rule all:
    input:
        rules.report.output.markdown,
        rules.report.output.html,
