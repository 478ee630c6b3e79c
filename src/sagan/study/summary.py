"""`sagan study --study NAME`: the study's results, statistics, figures and report, and its MLflow
parent run.

Reads every cell's metrics.json and run.json (written by `sagan train/evaluate --study NAME
--cell CELL`) and writes, under reports/studies/NAME/:
- results.csv: one row per cell (a variant at a seed): its variant's values, every number
  evaluate writes (FID, KID, precision, recall, SWD), steps and wall times, and the MLflow run id;
- summary.csv: per variant and metric, the mean, std and 95% interval over seeds, and the paired
  difference against the baseline variant with its interval (sagan.study.stats);
- a figure per headline metric (paths.STUDY_HEADLINE_METRICS: FID and recall), and report.md/html
  holding the study's section: its question, the table, the figures and the reading; the
  pipeline's report (sagan.report) also carries it while the results exist (report_sections).
In MLflow the study is one parent run (tagged `sagan.study` and with the question, found again on
the next summary) and every cell's training run becomes its child (`mlflow.parentRunId`), so the
UI nests them; a retrained cell's previous run is unlinked, so the children are exactly the cells'
current runs. Another report that carries the section names the cells retrained since (stale_cells).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sagan import paths, tracking
from sagan.atomic import atomic_path
from sagan.errors import SaganError
from sagan.metrics.official import weights_kind
from sagan.metrics.results import Evaluation
from sagan.params import MlflowParams, Params, flatten
from sagan.report.document import Document, Figure, Labelled, Section, Table, to_html, to_markdown
from sagan.run_record import RunRecord
from sagan.study import stats
from sagan.study.design import Study, StudyCell, value_name

SUMMARISED = ("fid", "kid_mean", "precision", "recall", "swd")  # summary.csv's metrics
LOWER_IS_BETTER = {"fid": True, "kid_mean": True, "swd": True, "precision": False, "recall": False}
LABELS = {"fid": "FID", "recall": "recall"}


def _missing(cell: StudyCell, path: Path) -> SaganError:
    return SaganError(f"{path}: not found; cell '{cell.name}' has not been trained and evaluated",
                      hint=f"run `sagan train --study {cell.study} --cell {cell.name}` and `sagan evaluate "
                           f"--study {cell.study} --cell {cell.name}`, or the whole study: "
                           f"`dvc repro {paths.study_pipeline(cell.study)}`")


def cell_row(cell: StudyCell) -> dict:
    outputs = cell.outputs
    for path in (outputs.metrics, outputs.metrics_protocol, outputs.run_record):
        if not path.is_file():
            raise _missing(cell, path)
    evaluation, record = Evaluation.read(outputs), RunRecord.read(outputs.run_record)
    evaluation.check_run(record, outputs)
    numbers = {key: value for key, value in evaluation.numbers.items() if not isinstance(value, dict)}
    return {"cell": cell.name, "variant": cell.variant.name, "seed": cell.seed,
            **{key: value_name(value) for key, value in cell.variant.values.items()},
            **{key: value for key, value in numbers.items() if key != "wall_time_s"},
            "steps": record.steps, "train_wall_time_s": record.wall_time_s,
            "eval_wall_time_s": numbers.get("wall_time_s"), "weights_kind": weights_kind(evaluation.weights_sha256),
            "synthetic_data": evaluation.synthetic_data, "mlflow_run_id": record.mlflow_run_id}


def results_table(study: Study) -> pd.DataFrame:
    return pd.DataFrame([cell_row(cell) for cell in study.cells])


def summary_table(results: pd.DataFrame, baseline: str) -> pd.DataFrame:
    return pd.concat([stats.summarise(results, metric, baseline) for metric in SUMMARISED if metric in results],
                     ignore_index=True)


def metric_figure(summary: pd.DataFrame, results: pd.DataFrame, metric: str, out: Path) -> None:
    """The metric per variant: each seed as a dot, the mean with its 95% interval as an error bar;
    the axis starts at 0, so that the bars are not magnified into a difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary[summary["metric"] == metric].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(4.8, 1.6 + 1.2 * len(rows)), 3.6), dpi=100)
    for i, row in rows.iterrows():
        resolved = not math.isnan(row["ci_low"])
        half = [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]] if resolved else None
        ax.errorbar([i], [row["mean"]], yerr=half, fmt="o", color="black", capsize=6, markersize=7, zorder=3)
        seeds = results[results["variant"] == row["variant"]][metric].dropna()
        ax.scatter([i + 0.08] * len(seeds), seeds, s=14, color="tab:blue", alpha=0.7, zorder=2)
    ax.set_xticks(range(len(rows)), [name.replace("_", "\n") for name in rows["variant"]], fontsize=8)
    better = "lower" if LOWER_IS_BETTER[metric] else "higher"
    ax.set_ylabel(f"{LABELS.get(metric, metric)} ({better} is better)")
    ax.set_title(f"{LABELS.get(metric, metric)} per variant: mean, 95% interval (dots: seeds)", fontsize=9)
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def _ci(low: float, high: float, spec: str = ".2f") -> str:
    return "n/a (one seed)" if math.isnan(low) else f"[{low:{spec}}, {high:{spec}}]"


def _resolved(row) -> bool:
    return stats.Interval(int(row.n_pairs), row.diff_mean, math.nan, row.diff_ci_low, row.diff_ci_high).excludes_zero


def reading(summary: pd.DataFrame, baseline: str) -> str:
    """What the paired intervals support, in one sentence: which variants' FID differs from the
    baseline's beyond the noise, and which cover less of the data (recall lower, resolved)."""
    others = summary[summary["variant"] != baseline]
    fid, recall = others[others["metric"] == "fid"], others[others["metric"] == "recall"]
    n = int(fid["n_pairs"].min()) if len(fid) else 0
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    resolved = [r for r in fid.itertuples() if _resolved(r)]
    if resolved:
        parts = [f"{r.variant} {'lowers' if r.diff_mean < 0 else 'raises'} FID by {abs(r.diff_mean):.2f} "
                 f"{_ci(r.diff_ci_low, r.diff_ci_high)}" for r in resolved]
        rest = len(fid) - len(resolved)
        fid_text = (f"against {baseline}, paired over {seeds}: {'; '.join(parts)}"
                    + (f"; the other {rest} variant{'s are' if rest != 1 else ' is'} not resolved" if rest else ""))
    else:
        fid_text = (f"no variant's FID differs from {baseline}'s beyond the noise: every paired 95% interval "
                    f"includes 0, so the difference is not resolved at {seeds}")
    fewer = [r.variant for r in recall.itertuples() if _resolved(r) and r.diff_ci_high < 0]
    recall_text = (f"; {', '.join(fewer)} cover{'s' if len(fewer) == 1 else ''} less of the data than {baseline} "
                   f"(recall lower, resolved)" if fewer else
                   ("; no variant's recall is resolved below the baseline's" if len(recall) else ""))
    return f"{fid_text[0].upper()}{fid_text[1:]}{recall_text}."


def section(study: dict, results: pd.DataFrame, summary: pd.DataFrame, figures: dict[str, tuple[Path, str]],
            stale: Sequence[str] = ()) -> Section:
    """The report section of `study` (its name, question and baseline): the table, the figures
    (metric -> file, href) and the reading; with the `stale` cells (of stale_cells) named first and
    their variants marked."""
    baseline = study["baseline"]
    stale_variants = set(results[results["cell"].isin(stale)]["variant"])

    def metric_cells(variant: str, metric: str) -> list[str]:
        rows = summary[(summary["variant"] == variant) & (summary["metric"] == metric)]
        if rows.empty:
            return ["n/a", "n/a"]
        r = next(rows.itertuples())
        paired = "baseline" if variant == baseline else f"{r.diff_mean:+.3g} {_ci(r.diff_ci_low, r.diff_ci_high, '+.3g')}"
        return [f"{r.mean:.3g} {_ci(r.ci_low, r.ci_high, '.3g')}", paired]

    variants = list(dict.fromkeys(summary["variant"]))
    seeds = results.groupby("variant", sort=False)["seed"].count()
    rows = [[f"{v} (stale)" if v in stale_variants else v, str(seeds[v]), *metric_cells(v, "fid"),
             *metric_cells(v, "recall")] for v in variants]
    kind = results["weights_kind"].iloc[0]
    synthetic = " on synthetic data" if results["synthetic_data"].all() else ""
    note = ([Labelled("Stale:", f"cell{'s' if len(stale) > 1 else ''} {', '.join(stale)} "
                      f"{'have' if len(stale) > 1 else 'has'} been trained again (or removed) since `sagan study` "
                      f"ran: their rows show their previous runs. Rerun `sagan study --study {study['name']}`.")]
            if stale else [])
    return Section(f"Study '{study['name']}': {study['question']}", [
        *note,
        f"{len(variants)} variants, each trained at every seed ({len(results)} runs; {kind} Inception "
        f"weights{synthetic}), each compared with {baseline} at the same seed. Means with 95% intervals, "
        f"Student t over seeds (scipy.stats.t); recall is the share of the real images' neighbourhoods "
        f"that generated images reach: lower recall is less of the data covered.",
        Table(["Variant", "Seeds", "FID (95% interval)", f"FID vs {baseline} (paired)", "Recall (95% interval)",
               f"Recall vs {baseline} (paired)"], rows),
        *(Figure(file=file, href=href, caption=f"{LABELS[metric]} per variant: mean and 95% interval over "
                                               f"seeds; dots are seeds")
          for metric, (file, href) in figures.items()),
        Labelled("Reading:", reading(summary, baseline)),
    ])


def read_section(study_name: str, relative_to: Path) -> Section | None:
    """The section from a study's written results, for another report (None without results)."""
    out = paths.StudyReports(study_name)
    files = (out.results_csv, out.summary_csv, out.declaration, *out.figures.values())
    if not all(path.is_file() for path in files):
        return None
    results, summary = pd.read_csv(out.results_csv), pd.read_csv(out.summary_csv)
    figures = {metric: (path, str(path.relative_to(relative_to))) for metric, path in out.figures.items()}
    return section(json.loads(out.declaration.read_text()), results, summary, figures,
                   stale_cells(study_name, results))


def report_sections(relative_to: Path) -> list[Section]:
    """The section of each study whose results exist (`sagan study`), for the pipeline's report,
    whose figures' paths are relative to `relative_to`. Optional inputs: the report stage does not
    depend on them, so after a study, rerun the report (`sagan report`, or `dvc repro -f report`)."""
    found = (read_section(d.name, relative_to) for d in sorted(paths.STUDY_REPORTS_DIR.glob("*")))
    return [section for section in found if section is not None]


def stale_cells(study_name: str, results: pd.DataFrame) -> list[str]:
    """The cells whose current training run (their run.json) is not the run that `results`, the
    study's summary, holds: trained again, or removed, since `sagan study` ran."""
    where = f"{paths.StudyReports(study_name).results_csv}: cell"

    def current_run(cell: str) -> str | None:
        record = paths.RunOutputs(paths.study_cell_dir(study_name, paths.plain_name(cell, where))).run_record
        return RunRecord.read(record).mlflow_run_id if record.is_file() else None

    return sorted(cell for cell, run_id in zip(results["cell"], results["mlflow_run_id"]) if current_run(cell) != run_id)


def log_parent_run(mlflow_params: MlflowParams, study: Study, results: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The study's MLflow parent run (created once, found again by its tag, tagged with the
    question), its summary metrics, and every cell's training run nested under it."""
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
        if r.variant == study.baseline:
            metrics[f"{r.metric}/mean"] = r.mean
        elif not math.isnan(r.diff_mean):
            metrics[f"{r.metric}/{r.variant}/diff"] = r.diff_mean
    parent.log_metrics(metrics)
    parent.set_tags({"sagan.study.cells": str(len(results)), "sagan.study.question": study.question,
                     "sagan.study.baseline": study.baseline, "mlflow.note.content": study.question})
    parent.finish(True)
    return parent.run_id


def summarise(study: Study) -> None:
    """reports/studies/NAME/ from every cell's metrics, and the study's MLflow parent run."""
    cell_mlflow = study.cells[0].params.mlflow  # the cells' store and experiment (the study's base may set them)
    out = paths.StudyReports(study.name)
    results = results_table(study)
    summary = summary_table(results, study.baseline)
    with atomic_path(out.results_csv) as tmp:
        results.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out.summary_csv) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    declaration = {"name": study.name, "question": study.question, "baseline": study.baseline}
    with atomic_path(out.declaration) as tmp:
        tmp.write_text(json.dumps(declaration, indent=2) + "\n")
    for metric, path in out.figures.items():
        metric_figure(summary, results, metric, path)
    figures = {metric: (path, path.name) for metric, path in out.figures.items()}
    doc = Document(title=f"Study '{study.name}'", sections=[section(declaration, results, summary, figures)])
    with atomic_path(out.report_md) as md_tmp, atomic_path(out.report_html) as html_tmp:
        md_tmp.write_text(to_markdown(doc), encoding="utf-8")
        html_tmp.write_text(to_html(doc), encoding="utf-8")
    parent_id = log_parent_run(cell_mlflow, study, results, summary)
    print(f"sagan study: {len(results)} runs of study '{study.name}' -> {out.results_csv}, {out.summary_csv.name}, "
          f"{out.report_md.name}; MLflow parent run {parent_id}")
    print(f"sagan study: {reading(summary, study.baseline)}")


@dataclass(frozen=True)
class SeedSpread:
    """The FID over seeds of a study's variant that is params.yaml's own configuration."""

    study: str
    variant: str
    fid: stats.Interval

    def table_row(self) -> list[str]:
        """Table 1's row: the mean and 95% interval over the study's seeds."""
        interval = "" if math.isnan(self.fid.low) else f" [{self.fid.low:.2f}, {self.fid.high:.2f}]"
        return [f"This configuration over {self.fid.n} seeds", f"{self.fid.mean:.2f}{interval}",
                f"study '{self.study}', variant {self.variant} (sagan study)",
                "the same protocol; mean and 95% interval over seeds (Student t)"]


def params_spread(params: Params) -> SeedSpread | None:
    """The first study (by name) with results that has a variant whose cells trained `params`
    (params.yaml) but for the seed and the MLflow labels, by their run.json: the spread a single
    run of the pipeline is read against."""
    def comparable(flat: dict) -> dict:
        return {k: v for k, v in flat.items() if k != "train.seed" and not k.startswith("mlflow.")}

    mine = comparable(flatten(params))
    for name in sorted(d.name for d in paths.STUDY_REPORTS_DIR.glob("*")):
        out = paths.StudyReports(name)
        if not out.results_csv.is_file():
            continue
        for variant, cells in pd.read_csv(out.results_csv).groupby("variant", sort=False):
            record = paths.RunOutputs(paths.study_cell_dir(name, cells["cell"].iloc[0])).run_record
            if record.is_file() and comparable(RunRecord.read(record).params) == mine:
                return SeedSpread(name, str(variant), stats.t_interval(cells["fid"]))
    return None
