# The studies of studies/NAME/study.yaml (sagan.study) for Snakemake; studies/NAME/dvc.yaml is the
# same for DVC. One train and one evaluate job per cell, in parallel as far as --cores and --jobs
# allow (on a SLURM profile: one job each), sharing the pipeline's data and FID reference, then
# the study's summary. `snakemake --cores all study_NAME`; `snakemake --cores all` alone
# still runs only the paper's pipeline. Cell jobs take one thread each by default, so that cells
# run side by side (`--set-threads study_train=4` gives each more).
import functools

from sagan.study.design import load_study, study_names


@functools.cache
def study(name):
    """The study `name`, loaded when a job of it is planned, not while the Snakefile is parsed: a
    study is optional, and a broken study.yaml must fail its own targets only, not the paper's."""
    try:
        return load_study(name, load_params(DEFAULT_PARAMS))
    except SaganError as exc:
        sys.exit(f"snakemake: error: {exc}")  # one line, as for params.yaml (Snakefile)


CELL = paths.RunOutputs(paths.study_cell_dir("{study}", "{cell}"))  # a cell's outputs, as patterns
STUDY_REPORTS = paths.StudyReports("{study}")


wildcard_constraints:
    study=paths.PLAIN_NAME,
    cell=paths.PLAIN_NAME,


def cell_params(stage):
    """The cell's values of the stage's declared params (params.yaml, the study's base and the
    cell's axis values), so that a changed value reruns that cell's job only."""
    def values(wildcards):
        cell = dataclasses.asdict(study(wildcards.study).cell(wildcards.cell).params)
        section = lambda key: cell[key.partition(".")[0]]
        return {key: section(key)[key.partition(".")[2]] if "." in key else cell[key]
                for key in stages.param_keys(stage)}

    return values


def study_command(stage):
    return sagan_command(stage, "--study {wildcards.study} --cell {wildcards.cell}")


rule study_train:
    input:
        rules.prepare.output,
        rules.split.output,
        rules.fid_ref.output,
        stages.code_deps("train"),
        stages.source_file("sagan.study.design"),
    output:
        generator=CELL.generator,
        generator_best=CELL.generator_best,
        train_reports=directory(CELL.train_reports_dir),
    params:
        values=cell_params("train"),
    threads: 1
    log:
        "logs/studies/{study}/{cell}/train.log",
    resources:
        **gpus(),
    shell:
        study_command("train")


rule study_evaluate:
    input:
        rules.study_train.output,
        rules.prepare.output,
        rules.split.output,
        rules.fid_ref.output,
        rules.fid_bounds.output,
        stages.code_deps("evaluate"),
        stages.source_file("sagan.study.design"),
    output:
        metrics=CELL.metrics,
        protocol=CELL.metrics_protocol,
    params:
        values=cell_params("evaluate"),
    threads: 1
    log:
        "logs/studies/{study}/{cell}/evaluate.log",
    resources:
        **gpus(),
    shell:
        study_command("evaluate")


def study_cells_outputs(wildcards):
    """Every cell's metrics and training records (run.json): the summary waits for all of them."""
    return [path for cell in study(wildcards.study).cells
            for path in (cell.outputs.metrics, cell.outputs.metrics_protocol, cell.outputs.train_reports_dir)]


rule study_summary:
    input:
        study_cells_outputs,
        paths.study_file("{study}"),
        stages.code_deps("study"),
    output:
        results=STUDY_REPORTS.results_csv,
        summary=STUDY_REPORTS.summary_csv,
        declaration=STUDY_REPORTS.declaration,
        figures=list(STUDY_REPORTS.figures.values()),
        markdown=STUDY_REPORTS.report_md,
        html=STUDY_REPORTS.report_html,
    log:
        "logs/studies/{study}/summary.log",
    shell:
        "sagan study --params " + str(DEFAULT_PARAMS) + " --study {wildcards.study} 2>&1 | tee {log}"


# One target per study, `study_NAME` (studies/NAME/study.yaml): its cells and its summary.
for _name in study_names():

    rule:
        name:
            f"study_{_name}"
        input:
            expand(rules.study_summary.output, study=_name),
