"""dvc.yaml and the Snakemake rules are two views of one pipeline: same stages, commands,
inputs, outputs and param keys. This runs without executing any stage."""
from pathlib import Path

import pytest
import yaml

from sagan import paths

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["download", "prepare", "split", "fid_ref", "train", "evaluate", "report"]
# DVC's persistent checkpoint directory is not a Snakemake output on purpose (see train.smk).
PERSISTENT = {"models/checkpoints"}


def _expand_sources(items):
    """Directory deps under src/ expand to their .py files, as the Snakefile's sources() does."""
    out = set()
    for item in items:
        p = ROOT / item
        if item.startswith("src/") and p.is_dir():
            out |= {str(f.relative_to(ROOT)) for f in p.glob("*.py")}
        else:
            out.add(item)
    return out


def _name(entry):
    return next(iter(entry)) if isinstance(entry, dict) else entry


def dvc_stages() -> dict:
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    stages = {}
    for name, s in raw.items():
        outs = [_name(o) for key in ("outs", "metrics", "plots") for o in s.get(key, [])]
        stages[name] = {
            "cmd": s["cmd"],
            "inputs": _expand_sources(s["deps"]),
            "outputs": set(outs) - PERSISTENT,
            "params": set(s.get("params", [])),
        }
    return stages


@pytest.fixture(scope="module")
def snakemake_rules() -> dict:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(), snakefile=ROOT / "Snakefile",
                                workdir=ROOT)._workflow
        return {
            r.name: {
                "cmd": r.shellcmd.split(" 2>&1 | tee {log}")[0] if r.shellcmd else None,
                "inputs": _expand_sources(map(str, r.input)),
                "outputs": set(map(str, r.output)),
                "params": set(r.params.keys()),
                "log": list(map(str, r.log)),
            }
            for r in workflow.rules
        }


def test_same_stage_names(snakemake_rules):
    assert list(dvc_stages()) == STAGES
    assert set(snakemake_rules) == set(STAGES) | {"all"}


@pytest.mark.parametrize("stage", STAGES)
def test_same_command_inputs_outputs_params(stage, snakemake_rules):
    dvc, smk = dvc_stages()[stage], snakemake_rules[stage]
    assert dvc["cmd"] == smk["cmd"] == f"sagan {stage.replace('_', '-')} --params params.yaml"
    assert dvc["inputs"] == smk["inputs"]
    assert dvc["outputs"] == smk["outputs"]
    assert dvc["params"] == smk["params"]
    assert smk["log"] == [f"logs/{stage}.log"]


def test_every_stage_depends_on_its_own_source_module(snakemake_rules):
    for stage in STAGES:
        assert any(i.startswith("src/sagan/") for i in dvc_stages()[stage]["inputs"]), stage


def test_outputs_match_the_paths_module():
    outs = set().union(*(s["outputs"] for s in dvc_stages().values()))
    declared = {paths.RAW_ZIP, paths.RAW_PARTITION, paths.PREPARED_DIR, paths.SPLIT_FILE,
                paths.FID_REFERENCE, paths.GENERATOR, paths.SAMPLES_DIR, paths.RUN_RECORD,
                paths.LOSSES_CSV, paths.METRICS, paths.REPORT_MD, paths.REPORT_HTML, paths.FIGURES_DIR}
    assert outs == {str(p) for p in declared}


def test_params_keys_exist_in_params_yaml():
    from sagan.params import flatten, load_params

    flat = flatten(load_params(ROOT / "params.yaml"))
    for stage, s in dvc_stages().items():
        for key in s["params"]:
            assert key in flat or any(k.startswith(key + ".") for k in flat), (stage, key)


def test_checkpoints_persist_in_dvc():
    train = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    ckpt = [o for o in train["outs"] if isinstance(o, dict) and "models/checkpoints" in o]
    assert ckpt and ckpt[0]["models/checkpoints"]["persist"] is True
