"""dvc.yaml and the Snakemake rules are two views of one pipeline, and sagan.paths and the stage
modules own its declarations: paths, param keys, code deps. The Snakefile reads them; dvc.yaml
spells them, so these tests check every literal in it. This runs without executing any stage."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sagan import paths, stages
from sagan.params import Params, flatten

ROOT = Path(__file__).resolve().parents[1]
# The pipeline's paths: sagan.paths' constants and the paper run's outputs (paths.RUN).
PATH_CONSTANTS = {str(v) for v in vars(paths).values() if isinstance(v, Path)} | {
    str(getattr(paths.RUN, name)) for name, value in vars(paths.RunOutputs).items() if isinstance(value, property)}


def _expand_sources(items):
    """Directory deps under src/ expand to their modules; package __init__ files (docstrings only)
    are left out on both sides, as sagan.stages.code_deps leaves them out."""
    out = set()
    for item in items:
        p = ROOT / item
        if item.startswith("src/") and p.is_dir():
            out |= {str(f.relative_to(ROOT)) for f in p.glob("*.py") if f.name != "__init__.py"}
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
            "outputs": set(outs),
            "params": set(map(_name, s.get("params", []))),
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


# The study's rules (workflow/rules/study.smk; studies/attention/dvc.yaml is checked in test_study.py).
STUDY_RULES = {"study_train": "train", "study_evaluate": "evaluate", "study_summary": "study"}


def test_same_stage_names(snakemake_rules):
    assert tuple(dvc_stages()) == (stages.PARAMS_CHECK, *stages.STAGES)  # the Snakefile checks params itself
    studies = {f"study_{name}" for name in ("attention", "profiles")}  # a target per studies/NAME/study.yaml
    assert set(snakemake_rules) == set(stages.STAGES) | {"all"} | set(STUDY_RULES) | studies


@pytest.mark.parametrize("rule", STUDY_RULES)
def test_study_rules_depend_on_the_code_of_their_stage(rule, snakemake_rules):
    stage = STUDY_RULES[rule]
    cell_code = [str(stages.source_file("sagan.study.design"))] if stage != "study" else []
    code = {i for i in snakemake_rules[rule]["inputs"] if i.startswith("src/")}
    assert code == set(stages.code_deps(stage) + cell_code)
    assert snakemake_rules[rule]["log"][0].startswith("logs/studies/")


@pytest.mark.parametrize("stage", stages.STAGES)
def test_same_command_inputs_outputs_params(stage, snakemake_rules):
    dvc, smk = dvc_stages()[stage], snakemake_rules[stage]
    assert dvc["cmd"] == smk["cmd"] == f"sagan {stages.command(stage)} --params params.yaml"
    assert dvc["inputs"] - {str(paths.PARAMS_CHECKED)} == smk["inputs"]
    assert dvc["outputs"] == smk["outputs"]
    assert dvc["params"] == smk["params"]
    assert smk["log"] == [f"logs/{stage}.log"]


def test_dvc_checks_params_yaml_before_any_stage_with_outputs():
    """DVC deletes a stage's outputs before it runs the stage: a typo in params.yaml cost the
    trained generator before `sagan train` refused it. The first stage validates the whole file
    (and reruns when the validation changes) and every other stage comes after it, downstream of
    its stamp. tests/test_pipeline.py runs a typo through `dvc repro`."""
    check = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stages.PARAMS_CHECK]
    assert check["cmd"] == ["sagan params --params params.yaml", f"echo ok > {paths.PARAMS_CHECKED}"]
    assert check["params"] == [{"params.yaml": None}]  # every key of the file
    assert check["deps"] == [str(stages.source_file("sagan.params"))]
    assert check["outs"] == [str(paths.PARAMS_CHECKED)]
    after_check = {str(paths.PARAMS_CHECKED)}
    for stage, s in list(dvc_stages().items())[1:]:
        assert s["inputs"] & after_check, f"dvc.yaml {stage} may run before params.yaml is checked"
        after_check |= s["outputs"]


def test_dvc_yaml_paths_are_the_paths_module():
    """Every data path in dvc.yaml is a sagan.paths constant, and its stage is the one that the
    missing-input errors (paths.WRITTEN_BY) name; every data dep is an earlier stage's output."""
    produced = set()
    for stage, s in dvc_stages().items():
        data_deps = {i for i in s["inputs"] if not i.startswith("src/")}
        assert data_deps <= produced, f"{stage} depends on {sorted(data_deps - produced)}, no earlier output"
        for out in s["outputs"]:
            assert out in PATH_CONSTANTS, f"dvc.yaml {stage}: {out} is not a sagan.paths constant"
            assert paths.written_by(out) == stages.command(stage), f"paths.WRITTEN_BY[{out}] is not {stage}"
        produced |= s["outputs"]
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    assert {f for plot in plots for spec in plot.values() for f in spec["y"]} <= produced


@pytest.mark.parametrize("stage", stages.STAGES)
def test_param_keys_are_the_stage_declarations(stage):
    declared = stages.param_keys(stage)
    assert dvc_stages()[stage]["params"] == set(declared), f"dvc.yaml {stage} params != its module's PARAM_KEYS"
    flat = flatten(Params())
    for key in declared:
        assert key in flat or any(k.startswith(key + ".") for k in flat), f"{stage}: no param {key}"


def _dvc_outputs() -> dict[str, dict]:
    """Every declared output of dvc.yaml with its options (cache defaults to true)."""
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {_name(o): (o[_name(o)] if isinstance(o, dict) else {})
            for s in raw.values() for key in ("outs", "metrics", "plots") for o in s.get(key, [])}


def test_git_tracks_exactly_the_uncached_outputs():
    """The rule of docs/architecture.md: git holds the `cache: false` files (what `dvc metrics`,
    `dvc plots` and `dvc exp show` read from commits), DVC's cache the rest, never both."""
    outputs = _dvc_outputs()
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, capture_output=True,
                             text=True, input="\n".join(outputs) + "\n").stdout.split()
    assert {o for o, opts in outputs.items() if opts.get("cache", True)} == set(ignored)
    assert all(not opts.get("persist") for opts in outputs.values())


def test_checkpoints_are_neither_a_dvc_nor_a_snakemake_output(snakemake_rules):
    """A declared output that is missing makes DVC rerun its stage, so a clone that pulls would
    retrain; neither orchestrator must delete them before a rerun (train.smk)."""
    assert str(paths.RUN.checkpoints_dir) not in _dvc_outputs()
    assert str(paths.RUN.checkpoints_dir) not in snakemake_rules["train"]["outputs"]


def test_import_closure_sees_lazy_and_package_imports():
    closure = stages.import_closure("sagan.commands.train")
    # the command imports sagan.train.loop inside `run`, loop imports sagan.data.loader and loader
    # imports layout; `from sagan.train import records` (in train.publish) names a submodule.
    assert {"sagan.data.loader", "sagan.data.layout",
            "sagan.train.records", "sagan.model.sample", "sagan.model.losses"} <= closure
    assert not {"sagan.report.build", "sagan.data.prepare", "sagan.data.download"} & closure


@pytest.mark.parametrize("stage", stages.STAGES)
def test_code_deps_cover_the_stage_import_closure(stage, snakemake_rules):
    """Editing any module a stage runs must rerun it in both orchestrators; a missing one would
    let the cache serve a result computed by the old code."""
    needed = set(stages.code_deps(stage))
    for orchestrator, inputs in (("dvc.yaml", dvc_stages()[stage]["inputs"]),
                                 ("Snakemake", snakemake_rules[stage]["inputs"])):
        code = {i for i in inputs if i.startswith("src/")}
        missing, extra = sorted(needed - code), sorted(code - needed)
        assert not missing, f"{orchestrator} stage {stage!r} does not depend on {missing}"
        assert not extra, f"{orchestrator} stage {stage!r} depends on code it never imports: {extra}"


def test_snakefile_validates_params_like_sagan(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  lr_dd: 1.0e-3\n")
    proc = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "-s", str(ROOT / "Snakefile"),
                           "-d", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == \
        "snakemake: error: params.yaml: unknown param 'train.lr_dd' (hint: did you mean 'train.lr_d'?)"


def test_dvc_artifacts_name_the_generator_as_a_model():
    """DVC's model registry convention: the trained generator is a declared artifact of type model."""
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    assert artifacts["generator"]["path"] == str(paths.RUN.generator) and artifacts["generator"]["type"] == "model"
    assert artifacts["generator"]["desc"] and artifacts["generator"]["labels"]
    assert str(paths.RUN.generator) in dvc_stages()["train"]["outputs"]


def test_a_broken_study_fails_only_the_studys_targets(tmp_path):
    """A study is optional: a bad studies/NAME/study.yaml stopped `snakemake -n` for the paper's
    pipeline too. Only the study's targets fail, with the study's one line."""
    (tmp_path / "src").symlink_to(ROOT / "src")  # the stages' code deps, read from the project's source
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / paths.study_file("attention")).parent.mkdir(parents=True)
    (tmp_path / paths.study_file("attention")).write_text("question: Q?\nvariants: {a: {}}\nseed: [0]\n")
    snakemake = [str(Path(sys.executable).parent / "snakemake"), "-n", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path)]
    paper = subprocess.run(snakemake, cwd=tmp_path, capture_output=True, text=True)
    assert paper.returncode == 0, paper.stderr
    study = subprocess.run([*snakemake, "study_attention"], cwd=tmp_path, capture_output=True, text=True)
    assert study.returncode == 1
    assert study.stderr.strip().splitlines()[-1] == ("snakemake: error: studies/attention/study.yaml: unknown key "
                                                     "'seed' (hint: did you mean 'seeds'?)")


def test_snakemake_plans_any_study_by_its_target(tmp_path):
    """`snakemake study_NAME` for every study folder: the profile study plans its 10 cells."""
    for item in ("src", "configs", "studies"):
        (tmp_path / item).symlink_to(ROOT / item)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    snakemake = [str(Path(sys.executable).parent / "snakemake"), "-n", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path)]
    plan = subprocess.run([*snakemake, "study_profiles"], cwd=tmp_path, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    cells = set(re.findall(r"wildcards: study=profiles, cell=(\S+)", plan.stdout + plan.stderr))
    assert cells == {f"profile-{p}-seed{s}" for p in ("paper", "improved") for s in range(5)}
