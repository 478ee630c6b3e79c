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


# Modules a stage imports but that are deliberately not its code deps. They decide how a result
# is parsed, placed, written or reported, not what it is; listing them would invalidate every
# cached dataset and model on any edit. Package __init__ files are docstrings only.
SHARED_PLUMBING = {
    "sagan.params": "parses and validates params.yaml; the values themselves are param deps",
    "sagan.paths": "output path constants; a changed path changes the deps/outs themselves",
    "sagan.atomic": "write-to-temp-then-rename; changes how files are written, not their bytes",
    "sagan.errors": "the SaganError type; message text only",
    "sagan.cli": "dispatches `sagan STAGE` to the stage module's run()",
}


def import_closure(module: str) -> set[str]:
    """Every sagan module that `module` imports, transitively, at module level or inside
    functions (stages import heavy modules lazily), found by walking the source's AST."""
    import ast

    src = ROOT / "src"

    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = src.joinpath(*name.split(".")).with_suffix(".py")
        if name in seen or not path.is_file():  # a package, or not ours
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from sagan.report import figures` imports the submodule sagan.report.figures.
                todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return {m for m in seen if m.startswith("sagan.")}


def stage_module(stage: str) -> str:
    from sagan.cli import COMMANDS

    return COMMANDS[stage.replace("_", "-")][0]


def test_import_closure_sees_lazy_and_package_imports():
    closure = import_closure("sagan.train.loop")
    # loop imports sagan.data.loader inside a function, and loader imports formats;
    # `from sagan.train import checkpoint, dist, records` names submodules.
    assert {"sagan.data.loader", "sagan.data.formats",
            "sagan.train.records", "sagan.model.sample", "sagan.model.losses"} <= closure
    assert not {"sagan.report.build", "sagan.data.prepare", "sagan.data.download"} & closure


@pytest.mark.parametrize("stage", STAGES)
def test_code_deps_cover_the_stage_import_closure(stage, snakemake_rules):
    """Editing any module a stage runs must rerun it in both orchestrators; a missing one would
    let the cache serve a result computed by the old code."""
    needed = {f"src/{m.replace('.', '/')}.py" for m in import_closure(stage_module(stage))
              if m not in SHARED_PLUMBING}
    for orchestrator, inputs in (("dvc.yaml", dvc_stages()[stage]["inputs"]),
                                 ("Snakemake", snakemake_rules[stage]["inputs"])):
        code = {i for i in inputs if i.startswith("src/") and not i.endswith("__init__.py")}
        missing, extra = sorted(needed - code), sorted(code - needed)
        assert not missing, f"{orchestrator} stage {stage!r} does not depend on {missing}"
        assert not extra, f"{orchestrator} stage {stage!r} depends on code it never imports: {extra}"
