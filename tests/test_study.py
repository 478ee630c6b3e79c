"""The attention study (sagan.study): its cells and their params, the validation of a study file,
the statistics against an independent computation, the report section, and studies/attention/
dvc.yaml against the code. The study run end to end through both orchestrators is in
tests/test_pipeline.py (TestStudy)."""
from __future__ import annotations

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
from sagan.study.design import load_study
from helpers import run_record, tiny_params

ROOT = Path(__file__).resolve().parents[1]
# Student t quantiles t(0.975, df), from a printed table: the independent check of scipy's.
T975 = {1: 12.706204736174698, 2: 4.302652729911275, 3: 3.182446305284263}


def write_study(root: Path, axes: dict, base: dict | None = None, name: str = "attention") -> None:
    path = root / paths.study_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"base": base or {}, "axes": axes}))


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    (tmp_path / "src").symlink_to(ROOT / "src")  # the stages' PARAM_KEYS, read from the project's source
    monkeypatch.chdir(tmp_path)
    return tmp_path


FULL_AXES = {"attention": ["sagan", "biggan"], "placement": [2, 3, 4], "seed": [0, 1, 2]}


def test_the_committed_studies_load_and_the_paper_grid_has_21_trainings(monkeypatch):
    monkeypatch.chdir(ROOT)
    study = load_study("attention", load_params(ROOT / "params.yaml"))
    assert len(study.cells) == 3 + 2 * 3 * 3  # "none" has no placement: 27 combinations, 21 trainings
    smoke = yaml.safe_load((ROOT / "studies/attention/smoke.yaml").read_text())
    assert smoke["axes"] == {"attention": ["sagan"], "placement": [3], "seed": [0, 1]}  # the 2 x 2 grid


def test_each_cell_differs_from_params_and_base_in_exactly_its_axis_values(project):
    base = {"train": {"max_steps": 100}, "mlflow": {"experiment": "study-x"}}
    write_study(project, FULL_AXES, base)
    study = load_study("attention", Params())
    names = [cell.name for cell in study.cells]
    assert names[:3] == ["none-seed0", "none-seed1", "none-seed2"]
    assert "sagan-after2-seed0" in names and "biggan-after4-seed2" in names and len(set(names)) == 21
    expected_base = flatten(Params()) | {"train.max_steps": 100, "mlflow.experiment": "study-x"}
    for cell in study.cells:
        if cell.attention == "none":
            axis_values = {"model.attention": False, "train.seed": cell.seed}
        else:
            axis_values = {"model.attention": True, "model.attention_style": cell.attention,
                           "model.attention_after": cell.placement, "train.seed": cell.seed}
        got = flatten(cell.params)
        assert {k: v for k, v in got.items() if v != expected_base[k]} == \
               {k: v for k, v in axis_values.items() if v != expected_base[k]}, cell.name
        assert got == expected_base | axis_values
    cell = study.cell("biggan-after4-seed1")
    assert cell.outputs.generator == Path("studies/attention/cells/biggan-after4-seed1/models/generator.pt")
    assert cell.outputs.metrics == Path("studies/attention/cells/biggan-after4-seed1/reports/metrics.json")
    assert cell.tags["sagan.study.placement"] == "4" and cell.tags["mlflow.runName"] == "biggan-after4-seed1"
    assert study.cell("none-seed2").tags["sagan.study.placement"] == "-"


@pytest.mark.parametrize("axes, base, message", [
    ({**FULL_AXES, "placment": [3]}, None, "unknown axis 'placment' (hint: did you mean 'placement'?)"),
    ({**FULL_AXES, "attention": ["sagan", "transformer"]}, None, "axis 'attention': 'transformer' is not one of"),
    ({**FULL_AXES, "attention": ["none", "sagan"]}, None, "axis 'attention': leave out 'none'"),
    ({**FULL_AXES, "placement": [2, 5]}, None, "axis 'placement': 5 is not an integer in [1, 4]"),
    ({**FULL_AXES, "seed": [0, 0]}, None, "axis 'seed' lists a value twice"),
    ({k: v for k, v in FULL_AXES.items() if k != "seed"}, None, "axis 'seed' needs a non-empty list"),
    (FULL_AXES, {"train": {"lr_dd": 1e-3}}, "unknown param 'train.lr_dd'"),
    (FULL_AXES, {"fid": {"num_samples": 32}}, "base changes 'fid.num_samples', which the shared stage fid_bounds"),
    (FULL_AXES, {"prepare": {"size": 32}}, "base changes 'prepare.size', which the shared stage prepare reads"),
])
def test_a_bad_study_file_is_one_line_naming_it(project, axes, base, message):
    write_study(project, axes, base)
    with pytest.raises(SaganError) as err:
        load_study("attention", Params())
    text = str(err.value)
    assert message in text and text.startswith("studies/attention/study.yaml") and "\n" not in text


def test_an_unknown_cell_or_study_names_the_known_ones(project):
    write_study(project, {"attention": ["sagan"], "placement": [3], "seed": [0]})
    study = load_study("attention", Params())
    with pytest.raises(SaganError, match="no cell 'sagan-after3-seed9'.*did you mean 'sagan-after3-seed0'"):
        study.cell("sagan-after3-seed9")
    with pytest.raises(SaganError, match="study 'atention' not found.*known studies: attention"):
        load_study("atention", Params())


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

    write_study(train_project, {"attention": ["sagan"], "placement": [2], "seed": [0, 1]})

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
    assert tags["sagan.study.seed"] == "1"

    capsys.readouterr()
    longer = cell_of(9)  # more steps: the cell resumes from its own newest checkpoint
    loop.train(longer.params, longer.outputs, longer.record, longer.tags)
    assert f"resuming from {cell.outputs.checkpoints_dir / 'step_0000006.pt'} (step 6 of 9)" in capsys.readouterr().out
    assert json.loads(cell.outputs.run_record.read_text())["mlflow_run_id"] == record["mlflow_run_id"]


# -- statistics --------------------------------------------------------------------------------
RESULTS = pd.DataFrame({
    "attention": ["none", "none", "none", "sagan", "sagan", "sagan"],
    "placement": pd.array([None, None, None, 3, 3, 3], dtype="Int64"),
    "seed": [0, 1, 2, 0, 1, 2],
    "fid": [30.0, 34.0, 32.0, 27.0, 30.5, 29.0],
})


def test_intervals_agree_with_a_hand_computation():
    fid = RESULTS["fid"]
    table = stats.summarise(RESULTS, "fid", "none").set_index("attention")
    none = [30.0, 34.0, 32.0]
    mean, sd = sum(none) / 3, math.sqrt(sum((x - 32.0) ** 2 for x in none) / 2)
    assert (mean, sd) == (32.0, 2.0)
    half = T975[2] * sd / math.sqrt(3)
    assert table.loc["none", "mean"] == pytest.approx(32.0)
    assert table.loc["none", "std"] == pytest.approx(2.0)
    assert (table.loc["none", "ci_low"], table.loc["none", "ci_high"]) == pytest.approx((32 - half, 32 + half))
    # paired by seed: differences -3, -3.5, -3 (sagan minus none)
    diffs = [-3.0, -3.5, -3.0]
    d_mean = sum(diffs) / 3
    d_sd = math.sqrt(sum((d - d_mean) ** 2 for d in diffs) / 2)
    d_half = T975[2] * d_sd / math.sqrt(3)
    row = table.loc["sagan"]
    assert row["n_pairs"] == 3 and row["diff_mean"] == pytest.approx(d_mean)
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx((d_mean - d_half, d_mean + d_half))
    # the cells' own intervals overlap, the paired one excludes 0: pairing by seed resolves it
    assert row["ci_low"] < table.loc["none", "ci_high"] and row["diff_ci_high"] < 0
    assert np.isnan(table.loc["none", "diff_mean"]) and len(fid) == 6


def test_one_seed_gives_no_interval_and_the_reading_says_unresolved():
    one = RESULTS[RESULTS["seed"] == 0]
    table = summary.summary_table(one.assign(kid_mean=0.1, swd=1.0))
    assert table["ci_low"].isna().all() and table["diff_ci_low"].isna().all() and len(table) == 6
    assert summary.reading(table) == ("No attention variant's FID differs from no attention beyond the noise: "
                                      "every paired 95% interval includes 0, so the difference is not resolved "
                                      "at 1 seed.")


def test_the_reading_names_a_resolved_difference():
    table = summary.summary_table(RESULTS)
    text = summary.reading(table)
    assert text.startswith("Against no attention, paired over 3 seeds: sagan, after layer 3 lowers FID by 3.17 [")


# -- the report section --------------------------------------------------------------------------
CELLS = ["none-seed0", "none-seed1", "none-seed2", "sagan-after3-seed0", "sagan-after3-seed1", "sagan-after3-seed2"]


def write_run_record(root: Path, cell: str, run_id: str) -> None:
    run_record(run_id).write(root / paths.RunOutputs(paths.study_cell_dir("attention", cell)).run_record)


def write_results(root: Path) -> None:
    """The study's results as `sagan study` writes them, and each cell's run record (run ids run-CELL)."""
    out = paths.StudyReports("attention")
    (root / out.root).mkdir(parents=True)
    results = RESULTS.assign(weights_kind="standin", synthetic_data=True, kid_mean=0.1, swd=2.0, cell=CELLS,
                             mlflow_run_id=[f"run-{cell}" for cell in CELLS])
    for cell in CELLS:
        write_run_record(root, cell, f"run-{cell}")
    table = summary.summary_table(results)
    results.to_csv(root / out.results_csv, index=False)
    table.to_csv(root / out.summary_csv, index=False)
    summary.fid_figure(table, results, root / out.figure)


def test_the_report_has_the_study_section_if_and_only_if_results_exist(project):
    from PIL import Image

    assert summary.report_sections(relative_to=paths.REPORTS_DIR) == []
    write_results(project)
    [section] = summary.report_sections(relative_to=paths.REPORTS_DIR)
    assert section.title == "Does self-attention help?"
    table = next(b for b in section.blocks if hasattr(b, "rows"))
    assert [row[0] for row in table.rows] == ["no attention", "sagan, after layer 3"]
    assert table.rows[0][2] == "32.00" and table.rows[1][5].startswith("-3.17 [")
    figure = next(b for b in section.blocks if hasattr(b, "href"))
    assert figure.href == "studies/attention/fid_by_cell.png"
    with Image.open(figure.file) as img:
        assert img.size[0] >= 480 and img.size[1] == 360


def test_the_section_marks_the_cells_trained_again_since_the_study_ran(project):
    """The report showed a study's numbers after a cell had been retrained (or removed): the
    section names the cells whose current run is not the one summarised, and their rows."""
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
    assert [row[0] for row in table.rows] == ["no attention (stale)", "sagan, after layer 3 (stale)"]


def test_the_parent_run_has_exactly_the_current_cells_runs_as_children(project):
    """A retrained cell's old run stayed a child of the study's parent run (5 children for 4
    cells): `sagan study` unlinks the runs that are no longer a cell's."""
    from sagan.params import MlflowParams
    from sagan import tracking

    mlflow_params = MlflowParams(tracking_uri=f"sqlite:///{project / 'mlflow.db'}", experiment="study")
    client = tracking.client(mlflow_params)
    experiment = client.create_experiment("study")
    write_study(project, {"attention": ["sagan"], "placement": [3], "seed": [0, 1]})
    study = load_study("attention", Params())
    runs = {cell.name: client.create_run(experiment).info.run_id for cell in study.cells}

    def summarise(run_ids: dict) -> str:
        results = RESULTS[RESULTS["seed"] < 2].assign(cell=[c.name for c in study.cells],
                                                      mlflow_run_id=[run_ids[c.name] for c in study.cells])
        parent = summary.log_parent_run(mlflow_params, study, results, summary.summary_table(results))
        children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
        return parent, {run.info.run_id for run in children}

    parent, children = summarise(runs)
    assert children == set(runs.values())
    retrained = runs | {"sagan-after3-seed1": client.create_run(experiment).info.run_id}
    again, children = summarise(retrained)
    assert again == parent and children == set(retrained.values())
    assert "mlflow.parentRunId" not in client.get_run(runs["sagan-after3-seed1"]).data.tags


def test_the_study_check_validates_every_cell_and_writes_only_its_stamp(project):
    """The study pipeline's first stage (`sagan study --check`): a typo in the study's base stops
    it before DVC deletes any cell's outputs; a valid study gets its stamp and nothing else."""
    import argparse

    from sagan.commands import study as study_command

    check = argparse.Namespace(study="attention", check=True)
    write_study(project, {"attention": ["sagan"], "placement": [3], "seed": [0]}, {"train": {"lr_g": "abc"}})
    with pytest.raises(SaganError, match=r"^studies/attention/study\.yaml .*train\.lr_g"):
        study_command.run(Params(), check)
    assert not (project / "studies/attention/cells").exists()
    write_study(project, {"attention": ["sagan"], "placement": [3], "seed": [0]})
    study_command.run(Params(), check)
    stamp = project / paths.study_checked("attention")
    assert list(stamp.parent.iterdir()) == [stamp] and stamp.read_text() == "ok\n"
    assert not (project / paths.StudyReports("attention").root).exists()


# -- studies/attention/dvc.yaml against the code --------------------------------------------------
def test_the_study_dvc_yaml_declares_what_the_code_reads_and_writes():
    dvc = yaml.safe_load((ROOT / paths.study_pipeline("attention")).read_text())
    assert dvc["vars"] == ["study.yaml:axes"]
    design = str(stages.source_file("sagan.study.design"))
    base = {"studies/attention/study.yaml": ["base"]}
    cells = {"train_none": "none-seed${item.seed}", "evaluate_none": "none-seed${item.seed}",
             "train_attention": "${item.attention}-after${item.placement}-seed${item.seed}",
             "evaluate_attention": "${item.attention}-after${item.placement}-seed${item.seed}"}
    for name, cell in cells.items():
        stage, step = dvc["stages"][name], name.split("_")[0]
        outputs = paths.RunOutputs(paths.study_cell_dir("attention", cell))
        assert stage["wdir"] == "../.."
        assert stage["cmd"] == f"sagan {step} --params params.yaml --study attention --cell {cell}"
        code = [d for d in stage["deps"] if d.startswith("src/")]
        assert sorted(code) == sorted(stages.code_deps(step) + [design]), name
        assert stage["params"] == [*stages.param_keys(step), base], name
        assert all(out[next(iter(out))] == {"cache": False} for out in stage["outs"]), name
        outs = [next(iter(out)) for out in stage["outs"]]
        if step == "train":  # after the check, and through it everything else (the check's order)
            assert outs == [str(p) for p in (outputs.generator, outputs.generator_best, outputs.train_reports_dir)]
            assert {str(paths.PREPARED_DIR), str(paths.SPLIT_FILE), str(paths.FID_REFERENCE),
                    str(paths.study_checked("attention"))} <= set(stage["deps"])
        else:
            assert outs == [str(outputs.metrics), str(outputs.metrics_protocol)]
            assert {str(outputs.generator), str(outputs.train_reports_dir), str(paths.FID_BOUNDS)} <= set(stage["deps"])
    assert dvc["stages"]["train_none"]["matrix"] == {"seed": "${axes.seed}"}
    assert dvc["stages"]["train_attention"]["matrix"] == {
        "attention": "${axes.attention}", "placement": "${axes.placement}", "seed": "${axes.seed}"}
    check = dvc["stages"]["check"]  # every cell's params validated before DVC deletes any cell's outputs
    assert list(dvc["stages"])[0] == "check" and check["wdir"] == "../.."
    assert check["cmd"] == "sagan study --params params.yaml --study attention --check"
    assert check["params"] == [{"params.yaml": None}, {"studies/attention/study.yaml": None}]  # every key
    assert check["deps"] == [str(stages.source_file(m)) for m in ("sagan.params", "sagan.study.design")]
    assert check["outs"] == [{str(paths.study_checked("attention")): {"cache": False}}]
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
    files = [cell.generator, cell.run_record, cell.metrics, reports.results_csv, reports.report_html]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, capture_output=True,
                             text=True, input="\n".join(map(str, files)) + "\n").stdout.split()
    assert ignored == [str(cell.generator), str(cell.run_record), str(cell.metrics)]



@pytest.mark.parametrize("name", ["../x", "x/y", ".", "", "-x", "a b"])
def test_a_study_or_cell_name_that_is_no_plain_name_is_one_line(project, name):
    """`--study ../x` read x/study.yaml beside studies/ and trained into x/cells/: a name is a
    directory under studies/ (a cell's under studies/NAME/cells/), never a path."""
    grid = {"attention": ["sagan"], "placement": [3], "seed": [0]}
    if name not in (".", ""):
        write_study(project, grid, name=name)  # a study file there: only the name stops it
    with pytest.raises(SaganError) as err:
        load_study(name, Params())
    assert str(err.value) == (f"--study {name!r}: not a plain name (hint: letters, digits, '_' and '-', "
                              "not starting with '-': it names a directory)")
    write_study(project, grid)
    with pytest.raises(SaganError) as err:
        load_study("attention", Params()).cell("../none-seed0")
    assert str(err.value).startswith("--cell '../none-seed0': not a plain name (hint: ")
