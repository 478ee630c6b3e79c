"""`sagan study --study NAME`: the study's results, statistics, figure and report, and its MLflow
parent run.

Reads every cell's metrics.json and run.json (written by `sagan train/evaluate --study NAME
--cell CELL`) and writes, under reports/studies/NAME/:
- results.csv: one row per cell and seed: the axis values, every number evaluate writes, steps
  and wall times, and the MLflow run id;
- summary.csv: per cell of the grid (seeds pooled) and metric, the mean, std and 95% interval over
  seeds, and the paired difference against no attention with its interval (sagan.study.stats);
- fid_by_cell.png, and report.md/html holding the section "Does self-attention help?", which
  the pipeline's report (sagan.report) also carries while the results exist (report_sections).
In MLflow the study is one parent run (tagged `sagan.study`, found again on the next summary) and
every cell's training run becomes its child (`mlflow.parentRunId`), so the UI nests them; a
retrained cell's previous run is unlinked, so the children are exactly the cells' current runs.
Another report that carries the section names the cells retrained since (stale_cells).

`sagan study --study NAME --check` only validates every cell's params and writes the stamp that the
study's DVC pipeline runs first (paths.study_checked).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sagan import paths, tracking
from sagan.atomic import atomic_path
from sagan.errors import SaganError
from sagan.metrics.official import weights_kind
from sagan.metrics.results import Evaluation
from sagan.params import MlflowParams
from sagan.report.document import Document, Figure, Labelled, Section, Table, to_html, to_markdown
from sagan.run_record import RunRecord
from sagan.study import stats
from sagan.study.design import BASELINE, Study, StudyCell

SUMMARISED = ("fid", "kid_mean", "swd")  # summary.csv's metrics; the report's table shows FID
SECTION_TITLE = "Does self-attention help?"


def _missing(cell: StudyCell, path: Path) -> SaganError:
    return SaganError(f"{path}: not found; cell '{cell.name}' has not been trained and evaluated",
                      hint=f"run `sagan train --study {cell.study} --cell {cell.name}` and `sagan evaluate "
                           f"--study {cell.study} --cell {cell.name}`, or the whole study: "
                           f"`dvc repro {paths.STUDIES_DIR / cell.study / 'dvc.yaml'}`")


def cell_row(cell: StudyCell) -> dict:
    outputs = cell.outputs
    for path in (outputs.metrics, outputs.metrics_protocol, outputs.run_record):
        if not path.is_file():
            raise _missing(cell, path)
    evaluation, record = Evaluation.read(outputs), RunRecord.read(outputs.run_record)
    evaluation.check_run(record, outputs)
    numbers = {key: value for key, value in evaluation.numbers.items() if not isinstance(value, dict)}
    return {"cell": cell.name, "attention": cell.attention, "placement": cell.placement, "seed": cell.seed,
            **{key: value for key, value in numbers.items() if key != "wall_time_s"},
            "steps": record.steps, "train_wall_time_s": record.wall_time_s,
            "eval_wall_time_s": numbers.get("wall_time_s"), "weights_kind": weights_kind(evaluation.weights_sha256),
            "synthetic_data": evaluation.synthetic_data, "mlflow_run_id": record.mlflow_run_id}


def results_table(study: Study) -> pd.DataFrame:
    table = pd.DataFrame([cell_row(cell) for cell in study.cells])
    table["placement"] = table["placement"].astype("Int64")  # empty for the cells without attention
    return table


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([stats.summarise(results, metric, BASELINE) for metric in SUMMARISED if metric in results],
                     ignore_index=True)


def label(attention: str, placement) -> str:
    return "no attention" if attention == BASELINE else f"{attention}, after layer {placement}"


def fid_figure(summary: pd.DataFrame, results: pd.DataFrame, out: Path) -> None:
    """FID per cell: each seed as a dot, the mean with its 95% interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fid = summary[summary["metric"] == "fid"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(4.8, 1.6 + 1.2 * len(fid)), 3.6), dpi=100)
    for i, row in fid.iterrows():
        resolved = not math.isnan(row["ci_low"])
        half = [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]] if resolved else None
        ax.errorbar([i], [row["mean"]], yerr=half, fmt="o", color="black", capsize=6, markersize=7, zorder=3)
        seeds = results[(results["attention"] == row["attention"])
                        & (results["placement"].astype("Float64").fillna(-1) ==
                           (-1 if pd.isna(row["placement"]) else row["placement"]))]
        ax.scatter([i + 0.08] * len(seeds), seeds["fid"], s=14, color="tab:blue", alpha=0.7, zorder=2)
    names = [label(a, p).replace(", ", "\n") for a, p in zip(fid["attention"], fid["placement"])]
    ax.set_xticks(range(len(fid)), names, fontsize=8)
    ax.set_ylabel("FID (lower is better)")
    ax.set_title("FID per cell: mean, 95% interval (dots: seeds)", fontsize=9)
    ax.set_xlim(-0.5, len(fid) - 0.5)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def _ci(low: float, high: float, spec: str = ".2f") -> str:
    return "n/a (one seed)" if math.isnan(low) else f"[{low:{spec}}, {high:{spec}}]"


def reading(summary: pd.DataFrame) -> str:
    """One sentence the numbers support: which cells' paired FID interval excludes zero."""
    fid = summary[(summary["metric"] == "fid") & (summary["attention"] != BASELINE)]
    n = int(fid["n_pairs"].min()) if len(fid) else 0
    resolved = fid[[stats.Interval(int(r.n_pairs), r.diff_mean, math.nan, r.diff_ci_low, r.diff_ci_high).excludes_zero
                    for r in fid.itertuples()]]
    if resolved.empty:
        return (f"No attention variant's FID differs from no attention beyond the noise: every paired 95% "
                f"interval includes 0, so the difference is not resolved at {n} seed{'s' if n != 1 else ''}.")
    parts = [f"{label(r.attention, r.placement)} {'lowers' if r.diff_mean < 0 else 'raises'} FID by "
             f"{abs(r.diff_mean):.2f} {_ci(r.diff_ci_low, r.diff_ci_high)}" for r in resolved.itertuples()]
    rest = len(fid) - len(resolved)
    tail = f"; the other {rest} cell{'s are' if rest != 1 else ' is'} not resolved" if rest else ""
    return f"Against no attention, paired over {n} seeds: {'; '.join(parts)}{tail}."


def section(results: pd.DataFrame, summary: pd.DataFrame, figure: Path, href: str,
            stale: Sequence[str] = (), study_name: str = "") -> Section:
    """The report section: the FID table, the figure and the reading; with the `stale` cells (of
    stale_cells) named first and their rows marked."""
    fid = summary[summary["metric"] == "fid"]
    stale_rows = {label(r.attention, r.placement) for r in results.itertuples() if r.cell in stale}
    def paired(r) -> str:
        if r.attention == BASELINE:
            return "baseline"
        return f"{r.diff_mean:+.2f} {_ci(r.diff_ci_low, r.diff_ci_high, '+.2f')}"

    def cell_label(r) -> str:
        name = label(r.attention, r.placement)
        return f"{name} (stale)" if name in stale_rows else name

    rows = [[cell_label(r), str(r.n_seeds), f"{r.mean:.2f}",
             "n/a" if math.isnan(r.std) else f"{r.std:.2f}", _ci(r.ci_low, r.ci_high), paired(r)]
            for r in fid.itertuples()]
    kind = results["weights_kind"].iloc[0]
    synthetic = " on synthetic data" if results["synthetic_data"].all() else ""
    note = ([Labelled("Stale:", f"cell{'s' if len(stale) > 1 else ''} {', '.join(stale)} "
                      f"{'have' if len(stale) > 1 else 'has'} been trained again (or removed) since `sagan study` "
                      f"ran: their rows show their previous runs. Rerun `sagan study --study {study_name}`.")]
            if stale else [])
    return Section(SECTION_TITLE, [
        *note,
        f"The paper places one self-attention module between the 3rd and 4th layers and reports one FID. "
        f"This study trains every cell of the grid with each seed ({len(results)} runs; {kind} Inception "
        f"weights{synthetic}) and compares each cell with no attention at the same seed. Intervals: 95%, "
        f"Student t over seeds (scipy.stats.t).",
        Table(["Cell", "Seeds", "FID mean", "std", "95% interval", "vs no attention (paired, 95% interval)"], rows),
        Figure(file=figure, href=href, caption="FID per cell: mean and 95% interval over seeds; dots are seeds"),
        Labelled("Reading:", reading(summary)),
    ])


def report_sections(relative_to: Path) -> list[Section]:
    """"Does self-attention help?" of each study whose results exist (`sagan study`), for the
    pipeline's report, whose figures' paths are relative to `relative_to`. Optional inputs: the
    report stage does not depend on them, so after a study, rerun the report (`sagan report`, or
    `dvc repro -f report`) to include it."""
    found = (read_section(d.name, relative_to) for d in sorted(paths.STUDY_REPORTS_DIR.glob("*")))
    return [section for section in found if section is not None]


def read_section(study_name: str, relative_to: Path) -> Section | None:
    """The section from a study's written results, for another report (None without results)."""
    out = paths.StudyReports(study_name)
    if not (out.results_csv.is_file() and out.summary_csv.is_file() and out.figure.is_file()):
        return None
    results = pd.read_csv(out.results_csv, dtype={"placement": "Int64"})
    summary = pd.read_csv(out.summary_csv, dtype={"placement": "Int64"})
    return section(results, summary, out.figure, str(out.figure.relative_to(relative_to)),
                   stale_cells(study_name, results), study_name)


def stale_cells(study_name: str, results: pd.DataFrame) -> list[str]:
    """The cells whose current training run (their run.json) is not the run that `results`, the
    study's summary, holds: trained again, or removed, since `sagan study` ran."""
    where = f"{paths.StudyReports(study_name).results_csv}: cell"

    def current_run(cell: str) -> str | None:
        record = paths.RunOutputs(paths.study_cell_dir(study_name, paths.plain_name(cell, where))).run_record
        return RunRecord.read(record).mlflow_run_id if record.is_file() else None

    return sorted(cell for cell, run_id in zip(results["cell"], results["mlflow_run_id"]) if current_run(cell) != run_id)


def log_parent_run(mlflow_params: MlflowParams, study: Study, results: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The study's MLflow parent run (created once, found again by its tag), its summary metrics,
    and every cell's training run nested under it."""
    client = tracking.client(mlflow_params)
    experiment = client.get_experiment_by_name(mlflow_params.experiment)
    if experiment is None:
        raise SaganError(f"MLflow experiment '{mlflow_params.experiment}' not found in "
                         f"{tracking.shown_uri(mlflow_params)}", hint="the cells' training runs create it")
    found = client.search_runs([experiment.experiment_id],
                               f"tags.`sagan.study` = '{study.name}' and tags.`sagan.study.parent` = 'true'")
    if found:
        parent = tracking.MlflowRun(client, found[0].info.run_id)
    else:
        parent = tracking.MlflowRun(client, client.create_run(experiment.experiment_id, tags={
            "mlflow.runName": f"study: {study.name}", "sagan.study": study.name, "sagan.study.parent": "true",
            "mlflow.source.name": "sagan study", "mlflow.source.type": "LOCAL"}).info.run_id)
    current = set(results["mlflow_run_id"])
    # A retrained cell's previous run is no child any more: the parent holds exactly the cells' runs.
    for old in client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'"):
        if old.info.run_id not in current:
            client.delete_tag(old.info.run_id, "mlflow.parentRunId")
    for run_id in current:
        client.set_tag(run_id, "mlflow.parentRunId", parent.run_id)
    metrics = {}
    for r in summary.itertuples():
        key = r.metric if r.attention == BASELINE else f"{r.metric}/{r.attention}-after{r.placement}"
        metrics[f"{key}/mean" if r.attention == BASELINE else f"{key}/diff"] = (
            r.mean if r.attention == BASELINE else r.diff_mean)
    parent.log_metrics(metrics)
    parent.set_tags({"sagan.study.cells": str(len(results))})
    parent.finish(True)
    return parent.run_id


def write_check_stamp(study: Study) -> None:
    """The study pipeline's first stage (studies/NAME/dvc.yaml): its cells' params are valid. A
    stamp of fixed content, so that rewriting it changes no hash downstream."""
    with atomic_path(paths.study_checked(study.name)) as tmp:  # its directory made if new
        tmp.write_text("ok\n")
    print(f"sagan study: {study.file}: the params of its {len(study.cells)} cells are valid")


def summarise(study: Study) -> None:
    """reports/studies/NAME/ from every cell's metrics, and the study's MLflow parent run."""
    cell_mlflow = study.cells[0].params.mlflow  # the cells' store and experiment (the study's base may set them)
    out = paths.StudyReports(study.name)
    results = results_table(study)
    summary = summary_table(results)
    with atomic_path(out.results_csv) as tmp:
        results.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out.summary_csv) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    fid_figure(summary, results, out.figure)
    doc = Document(title=f"Study '{study.name}': does self-attention help?",
                   sections=[section(results, summary, out.figure, out.figure.name)])
    with atomic_path(out.report_md) as md_tmp, atomic_path(out.report_html) as html_tmp:
        md_tmp.write_text(to_markdown(doc), encoding="utf-8")
        html_tmp.write_text(to_html(doc), encoding="utf-8")
    parent_id = log_parent_run(cell_mlflow, study, results, summary)
    print(f"sagan study: {len(results)} runs of study '{study.name}' -> {out.results_csv}, {out.summary_csv.name}, "
          f"{out.report_md.name}; MLflow parent run {parent_id}")
    print(f"sagan study: {reading(summary)}")
