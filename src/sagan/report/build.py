"""`sagan report`: Table 1, Figs. 4-6, run history and run metadata as report.md + report.html.

Reads reports/metrics.json and metrics_protocol.json (evaluate), reports/train/{losses.csv,
samples/,run.json} (train) and the MLflow experiment, and takes the studies' sections from the
caller; writes reports/report.md, reports/report.html and reports/figures/, and logs them to the
training run's MLflow run.
"""
from __future__ import annotations

import math
from pathlib import Path

from sagan import paths, tracking
from sagan.atomic import atomic_dir, atomic_path
from sagan.metrics.official import weights_kind
from sagan.metrics.results import Evaluation
from sagan.params import Params, flatten
from sagan.report import figures, history as run_history
from sagan.report.document import Document, Figure, Section, Table, to_html, to_markdown
from sagan.report.inputs import ReportInputs, read_inputs
from sagan.report.paper import PAPER_PROTOCOL, TABLE1
from sagan.run_record import RunRecord


STANDIN_WARNING = "stand-in extractor: not comparable with published FID"
SYNTHETIC_WARNING = "synthetic data: not CelebA"
THIS_RUN = "This run"
NOT_AVAILABLE = "–"


def fmt(value: float | int | None, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_AVAILABLE
    return format(value, spec)


def comparability_warnings(evaluation: Evaluation, run_record: RunRecord) -> list[str]:
    """Why this run's numbers cannot be set beside the paper's; empty when they can. The weights are
    judged by their digest: metrics_protocol.json's `weights_kind` is a word a hand edit can change."""
    warnings = []
    if weights_kind(evaluation.weights_sha256) != "official":
        warnings.append(STANDIN_WARNING)
    if evaluation.synthetic_data or run_record.synthetic_data:
        warnings.append(SYNTHETIC_WARNING)
    return warnings


def protocol(evaluation: Evaluation) -> str:
    numbers, pre = evaluation.numbers, evaluation.preprocessing
    return (f"{numbers['n_gen']} generated vs {numbers['n_ref']} reference images "
            f"({evaluation.reference_split} split); centre crop {pre.get('crop', '?')} px, "
            f"resized to {pre.get('size', '?')} px; extractor {evaluation.extractor}; "
            f"weights {weights_kind(evaluation.weights_sha256)}")


def table1_section(evaluation: Evaluation, run_record: RunRecord, spread_row: list[str] | None = None) -> Section:
    """The paper's rows and this run's; with `spread_row`, this configuration's FID over seeds from a
    study, so that the single run is read against its spread."""
    numbers = evaluation.numbers
    rows = [[r.model, fmt(r.fid), r.source, PAPER_PROTOCOL] for r in TABLE1]
    rows.append([THIS_RUN, fmt(numbers["fid"]), "measured here (sagan evaluate)", protocol(evaluation)])
    if spread_row:
        rows.append(spread_row)
    blocks = [Table(["Model", "FID (CelebA)", "Source", "Protocol"], rows),
              "FID: lower is better. The paper states no FID protocol; ours is recorded beside our number.",
              f"Scored: {scored_generator(evaluation, run_record)}."]
    if numbers.get("kid_mean") is not None:
        blocks.append(f"KID of this run: {fmt(numbers['kid_mean'], '.5f')} ± {fmt(numbers.get('kid_std'), '.5f')}.")
    return Section("Table 1: FID on CelebA", blocks)


# The columns of the scale table: (metrics key, header, format); lower is better but for precision/recall.
SCALE_COLUMNS = (("fid", "FID", ".2f"), ("kid_mean", "KID", ".5f"), ("precision", "precision", ".3f"),
                 ("recall", "recall", ".3f"), ("swd", "SWD (x1e3)", ".1f"))


def scale_section(evaluation: Evaluation) -> Section:
    """Every metric beside its floor (real training images) and ceiling (untrained generator),
    all measured with one protocol, so a number says how far training got."""
    numbers, floor, ceiling = evaluation.numbers, evaluation.numbers["floor"], evaluation.numbers["ceiling"]
    rows = [
        [f"Floor: {floor['n_gen']} real training images", *(fmt(floor.get(k), f) for k, _, f in SCALE_COLUMNS)],
        [THIS_RUN, *(fmt(numbers.get(k), f) for k, _, f in SCALE_COLUMNS)],
        ["Ceiling: the untrained generator", *(fmt(ceiling.get(k), f) for k, _, f in SCALE_COLUMNS)],
    ]
    closed = {name: evaluation.gap_closed(key) for key, name in (("fid", "FID"), ("swd", "SWD"))}
    reading = ", ".join(f"{value:.0%} of the {name} gap" for name, value in closed.items() if value is not None)
    protocols = evaluation.metric_protocols
    return Section("Metrics with a scale", [
        Table(["", *(header for _, header, _ in SCALE_COLUMNS)], rows),
        f"This run closes {reading} between the untrained generator and real images. Lower is better for FID, "
        f"KID and SWD; higher for precision (samples that look real) and recall (real images the samples cover).",
        f"{numbers['n_gen']} images per row. KID: {protocols.get('kid', NOT_AVAILABLE)}. Precision and recall: "
        f"{protocols.get('precision_recall', NOT_AVAILABLE)}. SWD, on pixels, needs no Inception weights: "
        f"{protocols.get('swd', NOT_AVAILABLE)}, on {numbers.get('n_swd', NOT_AVAILABLE)} images per side.",
    ])


def figures_section(written: dict[str, Path], evals) -> Section:
    def figure(name: str, caption: str) -> Figure:
        return Figure(file=written[name], href=f"{paths.FIGURES_DIR.name}/{name}", caption=caption)

    blocks = [
        figure(figures.FIG4, "Fig. 4: mean generator and discriminator loss per epoch"),
        figure(figures.FIG5, "Fig. 5: samples after the first epoch"),
        figure(figures.FIG6, "Fig. 6: samples after the last epoch"),
    ]
    if figures.FIG7 in written:
        blocks.append(figure(figures.FIG7, f"Fig. 7 (not in the paper): FID and SWD during training, "
                                           f"{int(evals['n_gen'].iloc[0])} generated images per point against "
                                           f"the same reference (train.eval_every); FID at this sample size is "
                                           f"higher than at evaluate's"))
    else:
        blocks.append("No evaluations during training (train.eval_every: 0), so no Fig. 7.")
    return Section("Figures", blocks)


def scored_generator(evaluation: Evaluation, run_record: RunRecord) -> str:
    """Which generator the numbers measure, in words."""
    if evaluation.generator == "best":
        return (f"the best generator during training (lowest FID, at step {run_record.best_step}); it was "
                f"selected on the same reference set it is scored on, so its FID is optimistic")
    return "the generator after the last step (as in the paper)"


def history_section(hist: run_history.History, this_run_id: str) -> Section:
    header = ["Run", *hist.differing_params, "FID", "KID", "steps", "wall time (s)", "img/s"]
    rows = []
    for row in hist.rows:
        m = row.metrics
        name = f"{row.run_name} ({THIS_RUN.lower()})" if row.run_id == this_run_id else row.run_name
        rows.append([name, *(row.params.get(k, NOT_AVAILABLE) for k in hist.differing_params),
                     fmt(row.fid), fmt(m.get(run_history.METRIC_KID), ".5f"),
                     fmt(m.get(run_history.METRIC_STEPS), ".0f"), fmt(m.get(run_history.METRIC_WALL_TIME), ".1f"),
                     fmt(m.get(run_history.METRIC_IMG_PER_S), ".1f")])
    params_note = ("Param columns: the logged params that differ between these runs."
                   if hist.differing_params else "All these runs logged the same params.")
    return Section("Run history", [
        f"{len(hist.rows)} of {hist.total_runs} runs in MLflow experiment '{hist.experiment}', sorted by FID "
        f"(lower is better; runs without FID last). {params_note}",
        Table(header, rows),
    ])


def metadata_section(inputs: ReportInputs) -> Section:
    """The run's own facts and params, from its run.json: never from the params.yaml of now."""
    record, evaluation = inputs.run_record, inputs.evaluation
    facts = [
        ["Git commit", record.git_commit],
        ["Data fingerprint (sha256 of the manifest)", record.data_fingerprint],
        ["MLflow run id", record.mlflow_run_id],
        ["MLflow experiment", record.mlflow_experiment],
        ["DVC experiment", record.dvc_experiment or "none (not run by `dvc exp run`)"],
        ["Synthetic data", str(bool(evaluation.synthetic_data or record.synthetic_data)).lower()],
        ["FID weights", f"{weights_kind(evaluation.weights_sha256)} (sha256 {evaluation.weights_sha256})"],
        ["Training", f"{record.steps} steps, {fmt(record.wall_time_s, '.1f')} s, "
                     f"{fmt(record.img_per_s, '.1f')} img/s on {record.device}"],
    ]
    ours, paper = record.params, flatten(Params())
    diff = [[key, str(paper.get(key, NOT_AVAILABLE)), str(ours[key])]
            for key in sorted(ours) if ours[key] != paper.get(key)]
    blocks = [Table(["Field", "Value"], facts)]
    if diff:
        blocks += ["Params that differ from the paper's configuration (params.yaml defaults):",
                   Table(["Param", "Paper", "This run"], diff)]
    else:
        blocks.append("Params: identical to the paper's configuration.")
    return Section("Metadata", blocks)


def build_document(params: Params, inputs: ReportInputs, hist: run_history.History, written: dict[str, Path],
                   study_sections: list[Section], spread_row: list[str] | None = None) -> Document:
    return Document(
        title=params.report.title,
        warnings=comparability_warnings(inputs.evaluation, inputs.run_record),
        sections=[table1_section(inputs.evaluation, inputs.run_record, spread_row), scale_section(inputs.evaluation),
                  figures_section(written, inputs.evals), *study_sections,
                  history_section(hist, inputs.run_record.mlflow_run_id), metadata_section(inputs)],
    )


def build_report(params: Params, outputs: paths.RunOutputs, study_sections: list[Section],
                 spread_row: list[str] | None = None) -> None:
    """reports/report.md and .html with their figures, of the training run and evaluation in
    `outputs`, with `study_sections` after the figures and `spread_row` (this configuration over
    seeds) in Table 1, logged to the training run: all or nothing."""
    inputs = read_inputs(outputs)
    hist = run_history.build_history(params.mlflow, params.report.history_max_runs)
    training_run = tracking.MlflowRun.from_run_record(params.mlflow, inputs.run_record, outputs.run_record)
    # Everything is built in temporaries first and published together at the end of the block, so
    # a failure leaves the previous report whole rather than half replaced.
    with atomic_dir(paths.FIGURES_DIR) as figures_tmp, atomic_path(paths.REPORT_MD) as md_tmp, \
            atomic_path(paths.REPORT_HTML) as html_tmp:
        names = figures.write_figures(inputs.losses, inputs.evals, inputs.first_sample, inputs.last_sample,
                                      figures_tmp)
        doc = build_document(params, inputs, hist, {name: figures_tmp / name for name in names}, study_sections,
                             spread_row)
        md_tmp.write_text(to_markdown(doc), encoding="utf-8")
        html_tmp.write_text(to_html(doc), encoding="utf-8")
    training_run.log_artifact(paths.REPORT_MD, "report")
    training_run.log_artifact(paths.REPORT_HTML, "report")
    training_run.log_artifacts(paths.FIGURES_DIR, "report/figures")
    print(f"sagan report: wrote {paths.REPORT_MD}, {paths.REPORT_HTML} and {paths.FIGURES_DIR}/")
