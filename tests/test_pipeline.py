"""The smoke pipeline end to end through DVC and Snakemake, in scratch git repos.

Proves the caching behaviour users rely on: a second run does nothing; a report param reruns only
report; a training param reruns train, evaluate and report but not the data stages or fid_ref; a
kill during training resumes from the checkpoint; the FID regression check passes (in the
Snakemake scenario, the shorter of the two); and the smoke attention study runs its cells on the
first run's data and FID reference, and a seed more adds only its cells (through Snakemake, its
jobs log through the project's tracking server, two cells at once). Through DVC, a typo in
params.yaml stops `dvc repro` before it deletes any output (DVC's first stage checks the file, and
reruns on any change to it), and docs/experiments.md's experiment workflow: commits carry the metrics (`dvc
metrics diff`, `dvc plots diff`), a queued sweep lands in `dvc exp show` with a FID each and in
MLflow under its names, `dvc exp apply` leaves nothing to run, and a clone that pulls from a remote
runs nothing. What each orchestrator did is recorded once per session by tests/scenarios.py (started in the background by conftest.py); these tests assert on
the records.
"""
from __future__ import annotations

import itertools
import json
import os

import pytest

from sagan import paths, tracking
from sagan.metrics import results
from scenarios import (ADDED_SEED, AFTER_TRAIN, ALL_STAGES, CHECK, SERVER_USER, STUDY_PIPELINE, SWEEP, DvcScenario,
                       SnakemakeScenario, StudyOutputs, experiments_fid)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def dvc_scenario(pipeline_scenarios) -> DvcScenario:
    return pipeline_scenarios["dvc"].result()


@pytest.fixture(scope="session")
def snakemake_scenario(pipeline_scenarios) -> SnakemakeScenario:
    return pipeline_scenarios["snakemake"].result()


# The smoke study's grid (studies/attention/smoke.yaml), and the cells a seed more adds.
STUDY_CELLS = {"none-seed0", "none-seed1", "sagan-after3-seed0", "sagan-after3-seed1"}
ADDED_CELLS = {f"none-seed{ADDED_SEED}", f"sagan-after3-seed{ADDED_SEED}"}


def check_study(study: StudyOutputs, cells: set[str] = STUDY_CELLS, name: str = "attention",
                cell: str = "sagan-after3-seed1", values: dict | None = None) -> None:
    """One row per cell, the report section titled by the question, and the MLflow parent (tagged
    with the question) with a child per cell tagged with its values."""
    values = values or {"model.attention": "true", "model.attention_style": "sagan", "model.attention_after": "3"}
    results = study.results.set_index("cell")
    assert set(results.index) == cells
    assert (results["steps"] == 50).all() and (results["fid"] > 0).all() and (results["n_gen"] == 64).all()
    assert (results["recall"] >= 0).all() and (results["precision"] >= 0).all()
    assert results.loc[cell, ["variant", "seed"]].tolist() == [cell.rpartition("-seed")[0], 1]
    assert f"## Study '{name}': " in study.report and "**Reading:** " in study.report
    assert "Recall (95% interval)" in study.report
    [parent] = [run_id for run_id, run in study.runs.items() if run.tags.get("sagan.study.parent") == "true"]
    assert study.runs[parent].tags["sagan.study.question"] in study.report
    children = {run.tags["sagan.study.cell"]: run.tags for run_id, run in study.runs.items() if run_id != parent}
    assert set(children) == cells and set(results["mlflow_run_id"]) == set(study.runs) - {parent}
    assert {tags["mlflow.parentRunId"] for tags in children.values()} == {parent}
    tags = children[cell]
    assert tags["sagan.study.seed"] == "1" and tags["sagan.study.variant"] == cell.rpartition("-seed")[0]
    assert {key: tags[f"sagan.study.{key}"] for key in values} == values


class TestDvc:
    def test_first_run_runs_every_stage_and_second_none(self, dvc_scenario):
        assert dvc_scenario.first_ran == ALL_STAGES | {CHECK}
        assert dvc_scenario.second_ran == set()

    def test_a_params_typo_stops_dvc_before_any_output_is_deleted(self, dvc_scenario):
        """DVC deletes a stage's outputs before it runs the stage: a typo cost train's outputs
        before `sagan train` refused it. The check stage fails first; every output stays as it was."""
        typo = dvc_scenario.params_typo
        assert typo.returncode != 0 and typo.ran == {CHECK}
        assert "sagan params: error: params.yaml: 'train.lr_g' must be float, got 'abc'" in typo.log
        assert {str(paths.RUN.generator), str(paths.RUN.run_record), str(paths.REPORT_HTML)} <= set(typo.outputs_before)
        assert typo.outputs_after == typo.outputs_before

    def test_report_param_reruns_only_report(self, dvc_scenario):
        assert dvc_scenario.report_param_ran == {CHECK, "report"}  # the check: any change to params.yaml

    def test_committing_as_readme_says_leaves_nothing_out(self, dvc_scenario):
        assert dvc_scenario.left_out_of_commit == ""

    def test_metrics_diff_between_two_commits_shows_the_fid_change(self, dvc_scenario):
        fid = dvc_scenario.more_epochs.metrics_diff[str(paths.RUN.metrics)]["fid"]
        assert fid["old"] == dvc_scenario.metrics["fid"]
        assert fid["diff"] == pytest.approx(fid["new"] - fid["old"]) and fid["diff"] != 0

    def test_plots_diff_loads_both_commits(self, dvc_scenario):
        plots_diff = dvc_scenario.more_epochs.plots_diff
        assert plots_diff.returncode == 0 and "failed to load" not in plots_diff.output, plots_diff.output
        assert str(paths.RUN.losses_csv) in plots_diff.output

    def test_queued_sweep_lands_in_exp_show_with_a_fid_each(self, dvc_scenario):
        experiments = dvc_scenario.experiments
        fids = experiments_fid(experiments.exp_show)
        assert len(fids) == len(SWEEP)
        assert all(isinstance(fid, float) and fid > 0 for fid in fids.values()), fids
        assert all(ran == AFTER_TRAIN | {CHECK} for ran in experiments.ran.values()), experiments.ran
        assert {"Experiment", "fid", "kid_mean", "train.lr_d", "train.epochs"} <= set(experiments.exp_show_columns)

    def test_applying_the_best_experiment_leaves_nothing_to_run(self, dvc_scenario):
        experiments = dvc_scenario.experiments
        assert experiments.ran_after_apply == set()
        fids = experiments_fid(experiments.exp_show)
        assert experiments.applied_metrics["fid"] == fids[experiments.best] == min(fids.values())

    def test_a_clone_that_pulls_from_the_remote_runs_nothing(self, dvc_scenario):
        project, clone = dvc_scenario.experiments.project, dvc_scenario.experiments.clone
        assert dvc_scenario.experiments.clone_ran == set()
        for path in (paths.RUN.generator, paths.FID_REFERENCE, paths.REPORT_HTML, paths.RUN.metrics):
            assert (clone / path).read_bytes() == (project / path).read_bytes(), path

    def test_kill_during_train_then_rerun_resumes(self, dvc_scenario):
        more_epochs = dvc_scenario.more_epochs
        assert more_epochs.killed_at > 0
        assert more_epochs.resume_ran == AFTER_TRAIN
        assert f"(step {more_epochs.killed_at} of" in more_epochs.resume_log

    def test_outputs_and_labels(self, dvc_scenario):
        project, metrics = dvc_scenario.project, dvc_scenario.metrics
        assert (project / paths.REPORT_HTML).stat().st_size > 10_000
        assert all(isinstance(v, (int, float)) for _, v in results.leaves(metrics)), metrics  # numbers only
        assert metrics["fid"] > 0 and metrics["n_gen"] == 64
        # the trained generator sits between real images and the untrained generator, on FID and SWD
        for key in ("fid", "swd"):
            assert metrics["floor"][key] < metrics[key] < metrics["ceiling"][key], (key, metrics)
        protocol = json.loads((project / paths.RUN.metrics_protocol).read_text())
        assert protocol["weights_kind"] == "standin" and protocol["synthetic_data"] is True

    def test_runs_are_tagged_with_dvc_and_experiments_with_their_names(self, dvc_scenario):
        tags = dvc_scenario.experiments.mlflow_tags
        assert {t.get("sagan.orchestrator") for t in tags} == {"dvc"}
        experiments = {t["sagan.dvc_experiment"]: t["mlflow.runName"] for t in tags if "sagan.dvc_experiment" in t}
        names = set(experiments_fid(dvc_scenario.experiments.exp_show))
        assert experiments == {name: name for name in names}  # in the project's store, not the queue's copies


class TestDvcStudy:
    """studies/README.md's study command, in a copy of the DVC scenario's project after its first run."""
    CELL_STAGES = {f"{STUDY_PIPELINE}:{step}@{cell}" for step in ("train", "evaluate") for cell in STUDY_CELLS} | \
        {f"{STUDY_PIPELINE}:summary", f"{STUDY_PIPELINE}:check"}

    def test_on_a_fresh_project_the_study_would_run_the_shared_stages_once_and_no_paper_training(self, dvc_scenario):
        shared = {CHECK, "download", "prepare", "split", "fid_ref", "fid_bounds"}
        assert dvc_scenario.study_dag == self.CELL_STAGES | shared

    def test_after_the_pipeline_the_study_runs_only_its_cells_and_writes_its_results(self, dvc_scenario):
        assert dvc_scenario.study.ran == self.CELL_STAGES
        check_study(dvc_scenario.study.outputs)

    def test_the_profile_study_runs_both_profiles_and_answers_on_fid_and_recall(self, dvc_scenario):
        cells = {f"profile-{p}-seed{s}" for p in ("paper", "improved") for s in (0, 1)}
        profiles = f"{paths.study_pipeline('profiles')}"
        assert dvc_scenario.profiles.ran == ({f"{profiles}:{step}@{c}" for step in ("train", "evaluate")
                                              for c in cells} | {f"{profiles}:check", f"{profiles}:summary"})
        check_study(dvc_scenario.profiles.outputs, cells, "profiles", "profile-improved-seed1", {"profile": "improved"})
        reading = dvc_scenario.profiles.outputs.report.split("**Reading:** ")[1].splitlines()[0]
        assert "profile-paper" in reading and "recall" in reading

    def test_a_study_declared_by_the_tests_over_lr_d_runs_through_the_same_mechanism(self, dvc_scenario):
        cells = {f"lr_d-{lr}-seed{s}" for lr in ("0.0001", "0.0004") for s in (0, 1)}
        pipeline = f"{paths.study_pipeline('lr_d')}"
        assert dvc_scenario.ad_hoc.ran == ({f"{pipeline}:{step}@{c}" for step in ("train", "evaluate")
                                            for c in cells} | {f"{pipeline}:check", f"{pipeline}:summary"})
        check_study(dvc_scenario.ad_hoc.outputs, cells, "lr_d", "lr_d-0.0001-seed1", {"train.lr_d": "0.0001"})

    def test_a_seed_more_leaves_only_its_cells_to_run(self, dvc_scenario):
        new = {f"{step}@{cell}" for step in ("train", "evaluate") for cell in ADDED_CELLS} | \
            {"summary", "check"}  # study.yaml changed
        assert dvc_scenario.study.out_of_date_after_seed == {f"{STUDY_PIPELINE}:{stage}" for stage in new}


class TestSnakemake:
    def test_first_run_plans_every_rule_and_second_none(self, snakemake_scenario):
        assert snakemake_scenario.first_planned == ALL_STAGES
        assert snakemake_scenario.second_planned == set()

    def test_report_param_reruns_only_report(self, snakemake_scenario):
        assert snakemake_scenario.report_param_planned == {"report"}

    def test_the_first_run_ran_every_stage_as_a_slurm_job(self, snakemake_scenario):
        if not snakemake_scenario.on_slurm:
            if os.environ.get("CI") == "1":
                pytest.fail("no SLURM cluster is running; .ci/run starts it (workflow/slurm/local-cluster.sh start)")
            pytest.skip("no SLURM cluster is running (workflow/slurm/local-cluster.sh start)")
        assert snakemake_scenario.slurm_jobs == sorted(ALL_STAGES)  # one job each, logged by the executor
        # the study: one job per cell's train and evaluate, and the summary
        cells = len(STUDY_CELLS)
        assert snakemake_scenario.study.slurm_jobs == ["study_evaluate"] * cells + ["study_summary"] + \
            ["study_train"] * cells

    def test_train_param_reruns_train_evaluate_report(self, snakemake_scenario):
        assert snakemake_scenario.more_epochs.train_param_planned == AFTER_TRAIN

    def test_kill_during_train_then_rerun_resumes(self, snakemake_scenario):
        more_epochs = snakemake_scenario.more_epochs
        assert f"(step {more_epochs.killed_at} of" in more_epochs.resume_log
        assert more_epochs.planned_after_resume == set()

    def test_fid_regression_check_passes(self, snakemake_scenario):
        check_fid = snakemake_scenario.check_fid
        assert check_fid.returncode == 0, check_fid.output

    def test_the_registered_generator_samples_what_the_file_does(self, snakemake_scenario):
        import io

        import numpy as np
        from PIL import Image

        registry, file = (np.asarray(Image.open(io.BytesIO(snakemake_scenario.samples[name])), dtype=int)
                          for name in ("registry.png", "file.png"))
        assert registry.shape == file.shape == (274, 274, 3)  # 64 images of 32 px, 8 x 8 with 2 px padding
        assert np.abs(registry - file).max() <= 1  # the exported program computes what the module does

    def test_each_trained_generator_is_one_version_tagged_with_its_fid(self, snakemake_scenario):
        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{snakemake_scenario.project / 'mlflow.db'}")
        versions = client.search_model_versions("name='sagan-smoke-generator'")
        # the first run (400 steps), then the same run continued to 500 steps after the kill; the
        # report-title rerun trained nothing and registered nothing
        assert len(versions) == 2 and len({v.run_id for v in versions}) == 1
        assert all(float(v.tags["fid"]) > 0 for v in versions)  # tagged by evaluate

    def test_runs_are_tagged_with_snakemake(self, snakemake_scenario):
        assert {t.get("sagan.orchestrator") for t in snakemake_scenario.mlflow_tags} == {"snakemake"}

    def test_the_study_runs_its_cells_on_the_shared_data_and_writes_its_results(self, snakemake_scenario):
        jobs = snakemake_scenario.study.planned
        cells = {f"study=attention, cell={cell}" for cell in STUDY_CELLS}
        assert jobs == ({("study_train", c) for c in cells} | {("study_evaluate", c) for c in cells}
                        | {("study_summary", "study=attention"), ("study_attention", "")})
        check_study(snakemake_scenario.study.outputs)

    def test_the_study_logs_through_the_tracking_server_two_cells_at_once(self, snakemake_scenario):
        """The study's jobs (SLURM jobs where the cluster runs) log through the project's tracking
        server (workflow/mlflow/server.sh, authentication on): each cell's run once, with its metrics
        and model, its artifacts kept by the server; at least two cells trained at the same time."""
        study = snakemake_scenario.study.outputs
        assert len(study.runs) == len(STUDY_CELLS) + 1  # the cells' runs and the parent, none twice
        assert all(run.artifact_uri.startswith("mlflow-artifacts:/") for run in study.runs.values())
        cells = [run for run in study.runs.values() if run.tags.get("sagan.study.parent") != "true"]
        assert all({"fid", tracking.METRIC_STEPS} <= run.metrics and run.models == ["generator"]
                   for run in cells), cells
        side_by_side = [(a, b) for a, b in itertools.combinations(cells, 2) if a.start < b.end and b.start < a.end]
        assert side_by_side, f"no two cells trained at the same time: {[(c.start, c.end) for c in cells]}"
        assert SERVER_USER[1] not in study.report and SERVER_USER[1] not in study.results.to_csv()

    def test_a_seed_more_plans_only_its_cells(self, snakemake_scenario):
        cells = {f"study=attention, cell={cell}" for cell in ADDED_CELLS}
        assert snakemake_scenario.study.planned_after_seed == (
            {("study_train", c) for c in cells} | {("study_evaluate", c) for c in cells}
            | {("study_summary", "study=attention"), ("study_attention", "")})
