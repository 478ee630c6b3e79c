"""Studies (sagan.study): declarations over any params, their cells and params, the validation of
a study file, the statistics against an independent computation, the report section, and the
studies' dvc.yaml against the code. The studies run end to end through the orchestrators in
tests/test_pipeline.py."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sagan import paths, stages
from sagan.errors import SaganError
from sagan.params import Params, flatten, load_params
from sagan.report.document import Labelled
from sagan.study import stats, summary
from sagan.study import design
from sagan.study.design import load_study
from helpers import run_record, tiny_params

ROOT = Path(__file__).resolve().parents[1]
# Student t quantiles t(0.975, df), from a printed table: the independent check of scipy's.
T975 = {1: 12.706204736174698, 2: 4.302652729911275, 3: 3.182446305284263}


def write_study(root: Path, cells: dict, base: dict | None = None, name: str = "attention", seeds=(0,),
                baseline: str | None = None, question: str = "Does it help?") -> None:
    """A study file: `cells` is {"axes": {...}} or {"variants": {...}}; the baseline defaults to
    the first variant."""
    variants = cells.get("variants") or {}
    first = next(iter(variants), None) or "_".join(
        f"{key.rpartition('.')[2]}-{design.value_name(values[0])}" for key, values in cells["axes"].items() if values)
    path = root / paths.study_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"question": question, "base": base or {}, **cells, "seeds": list(seeds),
                                    "baseline": baseline or first}, sort_keys=False))


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    (tmp_path / "src").symlink_to(ROOT / "src")  # the stages' PARAM_KEYS, read from the project's source
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the profiles a study may apply
    monkeypatch.chdir(tmp_path)
    return tmp_path


ATTENTION = {"variants": {"none": {"model.attention": False},
                          "sagan-after3": {"model.attention": True, "model.attention_style": "sagan",
                                           "model.attention_after": 3}}}
LR_D = {"axes": {"train.lr_d": [1.0e-4, 2.0e-4]}}


def test_the_committed_studies_load_with_their_cell_counts(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = load_params(ROOT / "params.yaml")
    attention = load_study("attention", params)
    assert len(attention.cells) == 21 and attention.baseline == "none"  # 7 variants x 3 seeds
    names = [cell.name for cell in attention.cells]
    assert names[:3] == ["none-seed0", "none-seed1", "none-seed2"] and "biggan-after4-seed2" in names
    styles = {(c.params.model.attention, c.params.model.attention_style, c.params.model.attention_after)
              for c in attention.cells}
    assert styles == {(False, "sagan", 3)} | {(True, s, p) for s in ("sagan", "biggan") for p in (2, 3, 4)}
    profiles_study = load_study("profiles", params)
    assert [c.name for c in profiles_study.cells] == [f"profile-{p}-seed{s}" for p in ("paper", "improved")
                                                      for s in range(5)]
    improved = profiles_study.cell("profile-improved-seed3").params
    assert (improved.train.loss, improved.model.attention_style, improved.mlflow.profile) == ("hinge", "biggan",
                                                                                              "improved")
    assert profiles_study.cell("profile-paper-seed3").params.train.loss == params.train.loss
    for name in ("attention", "profiles"):  # the CI versions: 2 x 2
        smoke = yaml.safe_load((ROOT / f"studies/{name}/smoke.yaml").read_text())
        assert smoke["seeds"] == [0, 1] and len(smoke.get("variants") or smoke["axes"]["profile"]) == 2


def test_each_cell_is_params_then_base_then_its_values_then_its_seed(project):
    base = {"train": {"max_steps": 100}, "mlflow": {"experiment": "study-x"}}
    write_study(project, LR_D, base, seeds=(0, 3))
    study = load_study("attention", Params())
    assert [c.name for c in study.cells] == ["lr_d-0.0001-seed0", "lr_d-0.0001-seed3", "lr_d-0.0002-seed0",
                                             "lr_d-0.0002-seed3"]
    expected = flatten(Params()) | {"train.max_steps": 100, "mlflow.experiment": "study-x"}
    for cell in study.cells:
        values = {"train.lr_d": float(cell.variant.name.split("-")[1]), "train.seed": cell.seed}
        assert flatten(cell.params) == expected | values, cell.name
        assert cell.tags["sagan.study.train.lr_d"] == cell.variant.name.split("-")[1]
        assert cell.outputs.root == Path("studies/attention/cells") / cell.name
    both = {"axes": {"profile": ["paper", "improved"], "train.n_critic": [1, 2]}}
    write_study(project, both, baseline="profile-paper_n_critic-1")
    names = [c.name for c in load_study("attention", Params()).cells]
    assert names == ["profile-paper_n_critic-1-seed0", "profile-paper_n_critic-2-seed0",
                     "profile-improved_n_critic-1-seed0", "profile-improved_n_critic-2-seed0"]


@pytest.mark.parametrize("cells, extra, message", [
    (ATTENTION, {"seed": [0]}, "unknown key 'seed' (hint: did you mean 'seeds'?)"),
    ({"axes": {"train.lr_dd": [1e-4]}}, {}, "axes: unknown param 'train.lr_dd' (hint: did you mean 'train.lr_d'?)"),
    ({"axes": {"train.lr_d": ["fast", 1e-4]}}, {"baseline": "lr_d-fast"}, "'train.lr_d' must be float, got 'fast'"),
    ({"axes": {"train.lr_d": [1e-4, 1e-4]}}, {}, "axis 'train.lr_d' lists a value twice"),
    ({"axes": {}}, {}, "'axes' must map params to lists of values"),
    ({"axes": {"train.lr_d": []}}, {}, "axis 'train.lr_d' needs a non-empty list of values"),
    ({"axes": {"train.seed": [0, 1]}}, {"baseline": "seed-0"}, "'train.seed' is the study's `seeds`"),
    ({"axes": {"profile": ["paper", "fancy"]}}, {"baseline": "profile-paper"}, "profile 'fancy': configs/fancy.yaml"),
    ({"variants": {"a": {"model.attention": False}, "b": {"model.attention": False}}}, {"baseline": "a"},
     "variants 'a' and 'b' are the same cell"),
    ({**ATTENTION, **LR_D}, {"baseline": "none"}, "give the cells as 'axes' (every combination) or as 'variants'"),
    (ATTENTION, {"baseline": "nobody"}, "'baseline' must name one of the variants (none, sagan-after3)"),
    (ATTENTION, {"seeds": [0, 0]}, "'seeds' lists a seed twice"),
    (ATTENTION, {"seeds": []}, "'seeds' must be a non-empty list of integers >= 0"),
    (ATTENTION, {"question": ""}, "'question' must say in one sentence what the study answers"),
    (ATTENTION, {"base": {"train": {"lr_dd": 1e-3}}}, "unknown param 'train.lr_dd'"),
    (ATTENTION, {"base": {"fid": {"num_samples": 32}}}, "base changes 'fid.num_samples', which the shared stage"),
    (ATTENTION, {"base": {"prepare": {"size": 32}}}, "base changes 'prepare.size', which the shared stage prepare"),
])
def test_a_bad_study_file_is_one_line_naming_it(project, cells, extra, message):
    write_study(project, cells)
    path = project / paths.study_file("attention")
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **extra}, sort_keys=False))
    with pytest.raises(SaganError) as err:
        load_study("attention", Params())
    text = str(err.value)
    assert message in text and text.startswith("studies/attention/study.yaml") and "\n" not in text


def test_an_unknown_cell_or_study_names_the_known_ones(project):
    write_study(project, ATTENTION)
    study = load_study("attention", Params())
    with pytest.raises(SaganError, match="no cell 'sagan-after3-seed9'.*did you mean 'sagan-after3-seed0'"):
        study.cell("sagan-after3-seed9")
    with pytest.raises(SaganError, match="study 'atention' not found.*known studies: attention"):
        load_study("atention", Params())


def test_a_seed_more_adds_only_the_new_cells_to_the_dvc_file(project):
    """Adding a seed leaves every existing cell's stages as they were: DVC plans only the new ones."""
    from sagan import dvcfile

    (project / "studies").mkdir(exist_ok=True)
    write_study(project, ATTENTION, seeds=(0, 1))
    before = yaml.safe_load(dvcfile.study_text("attention", Params()))["stages"]
    write_study(project, ATTENTION, seeds=(0, 1, 2))
    after = yaml.safe_load(dvcfile.study_text("attention", Params()))["stages"]
    assert after["train"]["foreach"] == before["train"]["foreach"][:2] + ["none-seed2"] + \
        before["train"]["foreach"][2:] + ["sagan-after3-seed2"]
    assert after["train"]["do"] == before["train"]["do"] and after["evaluate"]["do"] == before["evaluate"]["do"]


def test_the_check_writes_each_cells_params_and_rewrites_only_the_changed(project):
    write_study(project, ATTENTION, seeds=(0, 1))
    study = load_study("attention", Params())
    written = design.write_cell_params(study)
    assert written == [paths.cell_params_file("attention", c.name) for c in study.cells]
    assert json.loads(written[2].read_text()) == flatten(study.cells[2].params)
    write_study(project, {"variants": {**ATTENTION["variants"], "sagan-after3": {
        **ATTENTION["variants"]["sagan-after3"], "model.attention_after": 2}}}, seeds=(0, 1))
    assert design.write_cell_params(load_study("attention", Params())) == written[2:]  # only that variant's


def test_a_placement_that_leaves_no_layer_fails_when_the_cell_trains():
    """Placement is checked against the image size by the networks (4 layers at 32 px)."""
    from sagan.model.networks import Generator
    from sagan.params import ModelParams

    with pytest.raises(SaganError, match="attention_after: 4 leaves no layer after the attention at 32 px"):
        Generator(ModelParams(attention_after=4), 32)


def test_a_cell_trains_into_its_own_directory_and_resumes_from_its_own_checkpoints(train_project, capsys):
    import json
    import os

    import mlflow

    from sagan.train import loop

    write_study(train_project, {"variants": {"sagan-after2": {"model.attention": True, "model.attention_after": 2}}},
                seeds=(0, 1))

    def cell_of(max_steps: int):
        return load_study("attention", tiny_params(max_steps=max_steps, checkpoint_every=3)).cell("sagan-after2-seed1")

    cell = cell_of(6)
    loop.train(cell.params, cell.outputs, cell.record, cell.tags)
    assert cell.outputs.generator.is_file() and cell.outputs.evals_csv.is_file()
    assert not paths.RUN.models_dir.exists() and not paths.RUN.train_reports_dir.exists()  # nothing of the pipeline's
    record = json.loads(cell.outputs.run_record.read_text())
    assert record["study"] == cell.record and record["params"]["train.seed"] == 1
    assert record["params"]["model.attention_after"] == 2 and record["steps"] == 6
    tags = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(record["mlflow_run_id"]).data.tags
    assert tags["sagan.study.cell"] == tags["mlflow.runName"] == "sagan-after2-seed1"
    assert (tags["sagan.study.seed"], tags["sagan.study.variant"], tags["sagan.study.model.attention_after"]) == (
        "1", "sagan-after2", "2")

    capsys.readouterr()
    longer = cell_of(9)  # more steps: the cell resumes from its own newest checkpoint
    loop.train(longer.params, longer.outputs, longer.record, longer.tags)
    assert f"resuming from {cell.outputs.checkpoints_dir / 'step_0000006.pt'} (step 6 of 9)" in capsys.readouterr().out
    assert json.loads(cell.outputs.run_record.read_text())["mlflow_run_id"] == record["mlflow_run_id"]


# -- statistics --------------------------------------------------------------------------------
RESULTS = pd.DataFrame({
    "variant": ["none", "none", "none", "sagan-after3", "sagan-after3", "sagan-after3"],
    "seed": [0, 1, 2, 0, 1, 2],
    "fid": [30.0, 34.0, 32.0, 27.0, 30.5, 29.0],
    "recall": [0.50, 0.52, 0.51, 0.40, 0.43, 0.41],
})


def test_intervals_agree_with_a_hand_computation():
    table = stats.summarise(RESULTS, "fid", "none").set_index("variant")
    none = [30.0, 34.0, 32.0]
    mean, sd = sum(none) / 3, math.sqrt(sum((x - 32.0) ** 2 for x in none) / 2)
    assert (mean, sd) == (32.0, 2.0)
    half = T975[2] * sd / math.sqrt(3)
    assert table.loc["none", "mean"] == pytest.approx(32.0)
    assert table.loc["none", "std"] == pytest.approx(2.0)
    assert (table.loc["none", "ci_low"], table.loc["none", "ci_high"]) == pytest.approx((32 - half, 32 + half))
    # paired by seed: differences -3, -3.5, -3 (sagan-after3 minus none)
    diffs = [-3.0, -3.5, -3.0]
    d_mean = sum(diffs) / 3
    d_sd = math.sqrt(sum((d - d_mean) ** 2 for d in diffs) / 2)
    d_half = T975[2] * d_sd / math.sqrt(3)
    row = table.loc["sagan-after3"]
    assert row["n_pairs"] == 3 and row["diff_mean"] == pytest.approx(d_mean)
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx((d_mean - d_half, d_mean + d_half))
    # the variants' own intervals overlap, the paired one excludes 0: pairing by seed resolves it
    assert row["ci_low"] < table.loc["none", "ci_high"] and row["diff_ci_high"] < 0
    assert np.isnan(table.loc["none", "diff_mean"])


def test_one_seed_gives_no_interval_and_the_reading_says_unresolved():
    one = RESULTS[RESULTS["seed"] == 0]
    table = summary.summary_table(one.assign(kid_mean=0.1, swd=1.0, precision=0.5), "none")
    assert table["ci_low"].isna().all() and table["diff_ci_low"].isna().all() and len(table) == 10
    assert summary.reading(table, "none") == (
        "No variant's FID differs from none's beyond the noise: every paired 95% interval includes 0, so the "
        "difference is not resolved at 1 seed; no variant's recall is resolved below the baseline's.")


def test_the_reading_names_a_resolved_difference_and_less_of_the_data_covered():
    text = summary.reading(summary.summary_table(RESULTS, "none"), "none")
    assert text.startswith("Against none, paired over 3 seeds: sagan-after3 lowers FID by 3.17 [")
    assert text.endswith("; sagan-after3 covers less of the data than none (recall lower, resolved).")


# -- the report section --------------------------------------------------------------------------
CELLS = ["none-seed0", "none-seed1", "none-seed2", "sagan-after3-seed0", "sagan-after3-seed1", "sagan-after3-seed2"]
DECLARATION = {"name": "attention", "question": "Does self-attention lower FID?", "baseline": "none"}


def write_run_record(root: Path, cell: str, run_id: str) -> None:
    """The cell's run.json, trained with the paper's params (without attention for `none`)."""
    params = Params()
    if cell.startswith("none"):
        params = dataclasses.replace(params, model=dataclasses.replace(params.model, attention=False))
    run_record(run_id, params=flatten(params)).write(root / paths.RunOutputs(paths.study_cell_dir("attention",
                                                                                                   cell)).run_record)


def write_results(root: Path) -> None:
    """The study's results as `sagan study` writes them, and each cell's run record (run ids run-CELL)."""
    out = paths.StudyReports("attention")
    (root / out.root).mkdir(parents=True)
    results = RESULTS.assign(weights_kind="standin", synthetic_data=True, kid_mean=0.1, swd=2.0, precision=0.5,
                             cell=CELLS, mlflow_run_id=[f"run-{cell}" for cell in CELLS])
    for cell in CELLS:
        write_run_record(root, cell, f"run-{cell}")
    table = summary.summary_table(results, "none")
    results.to_csv(root / out.results_csv, index=False)
    table.to_csv(root / out.summary_csv, index=False)
    (root / out.declaration).write_text(json.dumps(DECLARATION))
    for metric, path in out.figures.items():
        summary.metric_figure(table, results, metric, root / path)


def test_the_report_has_the_study_section_if_and_only_if_results_exist(project):
    from PIL import Image

    assert summary.report_sections(relative_to=paths.REPORTS_DIR) == []
    write_results(project)
    [section] = summary.report_sections(relative_to=paths.REPORTS_DIR)
    assert section.title == "Study 'attention': Does self-attention lower FID?"
    table = next(b for b in section.blocks if hasattr(b, "rows"))
    assert [row[0] for row in table.rows] == ["none", "sagan-after3"]
    assert table.rows[0][2].startswith("32 [") and table.rows[0][3] == "baseline"
    assert table.rows[1][3].startswith("-3.17 [") and table.rows[1][5].startswith("-0.0967 [")
    figures = [b for b in section.blocks if hasattr(b, "href")]
    assert [f.href for f in figures] == ["studies/attention/fid_by_variant.png", "studies/attention/recall_by_variant.png"]
    for figure in figures:
        with Image.open(figure.file) as img:
            assert img.size[0] >= 480 and img.size[1] == 360


def test_the_section_marks_the_cells_trained_again_since_the_study_ran(project):
    """The report showed a study's numbers after a cell had been retrained (or removed): the
    section names the cells whose current run is not the one summarised, and their variants."""
    write_results(project)
    fresh = summary.read_section("attention", relative_to=paths.REPORTS_DIR)
    assert [block.label for block in fresh.blocks if isinstance(block, Labelled)] == ["Reading:"]
    write_run_record(project, "sagan-after3-seed1", "run-retrained")
    (project / paths.RunOutputs(paths.study_cell_dir("attention", "none-seed2")).run_record).unlink()
    section = summary.read_section("attention", relative_to=paths.REPORTS_DIR)
    assert section.blocks[0] == Labelled("Stale:", (
        "cells none-seed2, sagan-after3-seed1 have been trained again (or removed) since `sagan study` "
        "ran: their rows show their previous runs. Rerun `sagan study --study attention`."))
    table = next(b for b in section.blocks if hasattr(b, "rows"))
    assert [row[0] for row in table.rows] == ["none (stale)", "sagan-after3 (stale)"]


def test_table_1_shows_the_spread_of_the_variant_that_is_params_yaml(project):
    """A study variant that trains params.yaml's own configuration (but for the seed and MLflow
    labels) gives Table 1 a row with its FID over seeds, beside the single run."""
    params = Params()  # the paper's: attention after layer 3, SAGAN's module
    assert summary.params_spread(params) is None  # no results yet
    write_results(project)
    spread = summary.params_spread(params)
    assert (spread.study, spread.variant, spread.fid.n) == ("attention", "sagan-after3", 3)
    assert spread.table_row()[:2] == ["This configuration over 3 seeds",
                                      f"28.83 [{spread.fid.low:.2f}, {spread.fid.high:.2f}]"]
    assert summary.params_spread(dataclasses.replace(params, train=dataclasses.replace(params.train, lr_d=1e-3))) is None


def test_the_parent_run_has_exactly_the_current_cells_runs_as_children(project):
    """A retrained cell's old run stayed a child of the study's parent run (5 children for 4
    cells): `sagan study` unlinks the runs that are no longer a cell's."""
    from sagan.params import MlflowParams
    from sagan import tracking

    mlflow_params = MlflowParams(tracking_uri=f"sqlite:///{project / 'mlflow.db'}", experiment="study")
    client = tracking.client(mlflow_params)
    experiment = client.create_experiment("study")
    write_study(project, ATTENTION, seeds=(0, 1))
    study = load_study("attention", Params())
    runs = {cell.name: client.create_run(experiment).info.run_id for cell in study.cells}

    def summarise(run_ids: dict) -> str:
        results = RESULTS[RESULTS["seed"] < 2].assign(cell=[c.name for c in study.cells],
                                                      mlflow_run_id=[run_ids[c.name] for c in study.cells])
        parent = summary.log_parent_run(mlflow_params, study, results, summary.summary_table(results, "none"))
        children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
        return parent, {run.info.run_id for run in children}

    parent, children = summarise(runs)
    assert children == set(runs.values())
    assert client.get_run(parent).data.tags["sagan.study.question"] == "Does it help?"
    retrained = runs | {"sagan-after3-seed1": client.create_run(experiment).info.run_id}
    again, children = summarise(retrained)
    assert again == parent and children == set(retrained.values())
    assert "mlflow.parentRunId" not in client.get_run(runs["sagan-after3-seed1"]).data.tags


def test_the_study_check_validates_every_cell_and_writes_only_their_params(project):
    """The study pipeline's first stage (`sagan study --check`): a typo in the study's base stops
    it before DVC deletes any cell's outputs; a valid study gets its cells' params and nothing else."""
    import argparse

    from sagan.commands import study as study_command

    check = argparse.Namespace(study="attention", check=True, dry=False, list=False)
    write_study(project, ATTENTION, {"train": {"lr_g": "abc"}})
    with pytest.raises(SaganError, match=r"^studies/attention/study\.yaml .*train\.lr_g"):
        study_command.run(Params(), check)
    assert not (project / "studies/attention/cells").exists()
    write_study(project, ATTENTION)
    study_command.run(Params(), check)
    cells = project / paths.study_cells_dir("attention")
    assert sorted(p.relative_to(cells).as_posix() for p in cells.rglob("*") if p.is_file()) == [
        "none-seed0/params.json", "sagan-after3-seed0/params.json"]
    assert not (project / paths.StudyReports("attention").root).exists()


def test_list_and_dry_say_what_a_study_costs_and_changes(project, capsys):
    import argparse

    from sagan.commands import study as study_command

    write_study(project, ATTENTION, seeds=(0, 1, 2))
    study_command.run(Params(), argparse.Namespace(study=None, check=False, dry=False, list=True))
    assert capsys.readouterr().out == ("attention: 2 variants x 3 seeds = 6 trainings (and as many evaluations); "
                                       "baseline none\n  Does it help?\n")
    study_command.run(Params(), argparse.Namespace(study="attention", check=False, dry=True, list=False))
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "  none-seed0: model.attention=False" and out[-1].startswith("  sagan-after3-seed2: train.seed=2")


# -- the committed studies' DVC files -----------------------------------------------------------
def test_the_study_dvc_yaml_declares_what_the_code_reads_and_writes(monkeypatch):
    monkeypatch.chdir(ROOT)
    dvc = yaml.safe_load((ROOT / paths.study_pipeline("attention")).read_text())
    study = load_study("attention", load_params(ROOT / "params.yaml"))
    cells = [cell.name for cell in study.cells]
    item = paths.RunOutputs(paths.study_cell_dir("attention", "${item}"))
    for step in ("train", "evaluate"):
        stage = dvc["stages"][step]
        assert stage["foreach"] == cells
        do = stage["do"]
        assert do["wdir"] == "../.."
        assert do["cmd"] == f"sagan {step} --params params.yaml --study attention --cell ${{item}}"
        assert sorted(d for d in do["deps"] if d.startswith("src/")) == stages.code_deps(step)
        assert do["deps"][0] == str(paths.cell_params_file("attention", "${item}"))  # the cell's own params
        assert all(out[next(iter(out))] == {"cache": False} for out in do["outs"])
        outs = [next(iter(out)) for out in do["outs"]]
        expected = ((item.generator, item.generator_best, item.train_reports_dir) if step == "train"
                    else (item.metrics, item.metrics_protocol))
        assert outs == [str(p) for p in expected]
    check = dvc["stages"]["check"]  # every cell's params validated before DVC deletes any cell's outputs
    assert list(dvc["stages"])[0] == "check" and check["wdir"] == "../.."
    assert check["cmd"] == "sagan study --params params.yaml --study attention --check"
    assert check["params"] == [{"params.yaml": None}, {"studies/attention/study.yaml": None}]  # every key
    assert check["outs"] == [{str(paths.cell_params_file("attention", c)): {"cache": False}} for c in cells]
    profiles = yaml.safe_load((ROOT / paths.study_pipeline("profiles")).read_text())["stages"]["check"]
    assert "configs/improved.yaml" in profiles["deps"]  # a profile's edit reruns its cells
    summary_stage = dvc["stages"]["summary"]
    assert summary_stage["cmd"] == "sagan study --params params.yaml --study attention"
    assert sorted(d for d in summary_stage["deps"] if d.startswith("src/")) == stages.code_deps("study")
    assert summary_stage["outs"] == [{str(paths.StudyReports("attention").root): {"cache": False}}]


def test_git_tracks_the_study_results_and_ignores_the_cells():
    """No study output is in DVC's cache (a checkout would fail on a study never run): the small
    results are git's, the cells' models and records stay on the machine that trained them."""
    import subprocess

    cell = paths.RunOutputs(paths.study_cell_dir("attention", "none-seed0"))
    reports = paths.StudyReports("attention")
    files = [cell.generator, cell.run_record, cell.metrics, paths.cell_params_file("attention", "none-seed0"),
             reports.results_csv, reports.report_html, reports.declaration]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, capture_output=True,
                             text=True, input="\n".join(map(str, files)) + "\n").stdout.split()
    assert ignored == list(map(str, files[:4]))


@pytest.mark.parametrize("name", ["../x", "x/y", ".", "", "-x", "a b", ".x"])
def test_a_study_or_cell_name_that_is_no_plain_name_is_one_line(project, name):
    """`--study ../x` read x/study.yaml beside studies/ and trained into x/cells/: a name is a
    directory under studies/ (a cell's under studies/NAME/cells/), never a path."""
    if name not in (".", ""):
        write_study(project, ATTENTION, name=name)  # a study file there: only the name stops it
    with pytest.raises(SaganError) as err:
        load_study(name, Params())
    assert str(err.value) == (f"--study {name!r}: not a plain name (hint: letters, digits, '_', '-' and '.', "
                              "starting with a letter, digit or '_': it names a directory)")
    write_study(project, ATTENTION)
    with pytest.raises(SaganError) as err:
        load_study("attention", Params()).cell("../none-seed0")
    assert str(err.value).startswith("--cell '../none-seed0': not a plain name (hint: ")

