"""The DVC files, written from the command registry: dvc.yaml for the paper's pipeline and
studies/NAME/dvc.yaml for each study (`sagan stages --write`; `--check` says whether they are
current).

DVC cannot compute a stage's declarations, so they are written out: each stage's command, its
code deps (sagan.stages.code_deps: the import closure of its command), its params
(sagan.stages.param_keys: its command's PARAM_KEYS) and its data. The data a stage reads and
writes (sagan.paths) and the few keys only DVC has (`cache: false`, `metrics`, `plots`,
`artifacts`, `matrix`) are the tables below. The Snakemake rules derive the same declarations
when the Snakefile loads, and tests/test_orchestration.py checks that both agree.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from sagan import paths, stages
from sagan.params import Params
from sagan.study import design
from sagan.study.design import load_study


@dataclasses.dataclass(frozen=True)
class File:
    """A dep or an output of a stage, as DVC declares it."""

    path: Path | str
    why: str = ""  # the line's comment
    cache: bool = True  # False: git tracks it (small text files that `dvc metrics/plots/exp show` compare)
    kind: str = "outs"  # outputs only: outs | metrics | plots


def _files(*items) -> tuple[File, ...]:
    return tuple(item if isinstance(item, File) else File(item) for item in items)


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    deps: tuple[File, ...]  # the data it reads; its code deps are added from the registry
    outs: tuple[File, ...]


PIPELINE = (
    Stage("download", _files(paths.PARAMS_CHECKED), _files(paths.RAW_ZIP, paths.RAW_PARTITION)),
    Stage("prepare", _files(paths.RAW_ZIP, paths.RAW_PARTITION), _files(paths.PREPARED_DIR)),
    Stage("split", _files(paths.PREPARED_DIR), _files(paths.SPLIT_FILE)),
    Stage("fid_ref", _files(paths.PREPARED_DIR, paths.SPLIT_FILE), _files(paths.FID_REFERENCE)),
    Stage("fid_bounds", _files(paths.PREPARED_DIR, paths.SPLIT_FILE, paths.FID_REFERENCE), _files(paths.FID_BOUNDS)),
    Stage("train",
          _files(paths.PREPARED_DIR, paths.SPLIT_FILE,
                 File(paths.FID_REFERENCE, "the evaluations during training (train.eval_every)")),
          _files(File(paths.RUN.generator, "models/checkpoints/ is deliberately not an output: see above"),
                 paths.RUN.generator_best, paths.RUN.samples_dir, File(paths.RUN.run_record, cache=False),
                 File(paths.RUN.losses_csv, cache=False, kind="plots"),
                 File(paths.RUN.evals_csv, cache=False, kind="plots"))),
    Stage("evaluate",
          _files(paths.RUN.generator, File(paths.RUN.generator_best, "evaluate.generator: best"),
                 File(paths.RUN.run_record, "metrics_protocol.json records which training run it measures"),
                 File(paths.PREPARED_DIR, "SWD compares with the reference images themselves"),
                 paths.SPLIT_FILE, paths.FID_REFERENCE, paths.FID_BOUNDS),
          _files(File(paths.RUN.metrics, cache=False, kind="metrics"),
                 File(paths.RUN.metrics_protocol, cache=False))),
    Stage("report",
          _files(paths.RUN.metrics, paths.RUN.metrics_protocol, paths.RUN.losses_csv, paths.RUN.evals_csv,
                 paths.RUN.samples_dir, paths.RUN.run_record),
          _files(paths.REPORT_MD, paths.REPORT_HTML, paths.FIGURES_DIR)),
)
PIPELINE_BY_NAME = {stage.name: stage for stage in PIPELINE}

HEADER = """\
# The pipeline of docs/architecture.md as DVC stages; the Snakefile is the same pipeline for
# Snakemake. Written by `sagan stages --write` (sagan.dvcfile) from the command registry: edit
# the code, not this file; tests/test_orchestration.py fails while it is not current.
#
# What git holds and what DVC's cache holds (docs/architecture.md, "Git and the DVC cache"):
# `cache: false` marks the small text files that `dvc metrics`, `dvc plots` and `dvc exp show`
# compare, and run.json; git tracks them, so every commit and every experiment carries its
# numbers. Everything else is cached. models/checkpoints/ (train's resume state) is no output at
# all: DVC counts a missing output as a change, so a clone that pulls would retrain, and DVC
# leaves undeclared files alone, which is all that resuming needs.
artifacts:                # DVC's model registry convention (`dvc artifacts get`, DVC Studio)
  generator:
    path: models/generator.pt
    type: model
    desc: SAGAN generator (weights + config; `sagan sample`, sagan.model.io.load_generator); also an MLflow model of its training run
    labels: [sagan, gan, celeba, generator]

plots:                    # `dvc plots show`: the loss curves behind the paper's Fig. 4
  - losses:
      template: linear
      x: step
      y:
        reports/train/losses.csv: [d_loss, g_loss]
  - evaluations:          # FID and SWD during training (train.eval_every)
      template: linear
      x: step
      y:
        reports/train/evals.csv: [fid, swd]

stages:
  # DVC deletes a stage's outputs before it runs the stage, so a typo in params.yaml (`lr_g: abc`,
  # `dvc exp run -S train.lr_g=abc`) cost train's outputs before `sagan train` refused the value.
  # This stage validates the whole file first and writes a stamp ("ok") that download, and through
  # it every stage, depends on: a failed check stops `dvc repro` before any of them, and the same
  # stamp every time changes no hash downstream (sagan.stages.PARAMS_CHECK).
  params:
    cmd:
      - sagan params --params params.yaml
      - echo ok > {checked}    # a fixed line (DVC warns of an empty output)
    deps:
      - {params_source}    # the validation
    params:
      - params.yaml:    # every key
    outs:
      - {checked}
"""


def _line(indent: int, text: str, why: str = "") -> str:
    return " " * indent + text + (f"    # {why}" if why else "")


def _file_lines(files: tuple[File, ...], indent: int) -> list[str]:
    lines = []
    for f in files:
        if f.cache:
            lines.append(_line(indent, f"- {f.path}", f.why))
        else:
            lines += [_line(indent, f"- {f.path}:", f.why), _line(indent + 4, "cache: false")]
    return lines


def _stage_lines(name: str, cmd: str, deps: tuple[File, ...], params: list[str], outs: tuple[File, ...],
                 head: list[str] = (), indent: int = 4) -> list[str]:
    """One stage, its keys at `indent` (6 inside a foreach's `do:`); `params` are its lines under
    `params:`, indented for the default indent."""
    pad = " " * indent
    lines = ["", f"  {name}:", *head, f"{pad}cmd: {cmd}", f"{pad}deps:", *_file_lines(deps, indent + 2)]
    if params:
        lines += [f"{pad}params:", *params]
    for kind in ("outs", "metrics", "plots"):
        chosen = tuple(f for f in outs if f.kind == kind)
        if chosen:
            lines += [f"{pad}{kind}:", *_file_lines(chosen, indent + 2)]
    return lines


def _code(stage: str, *extra: str) -> tuple[File, ...]:
    return _files(*stages.code_deps(stage), *extra)


def pipeline_text() -> str:
    """dvc.yaml: the params check, then every stage of sagan.stages.STAGES."""
    assert tuple(s.name for s in PIPELINE) == stages.STAGES, "dvcfile.PIPELINE lists every stage, in order"
    lines = [HEADER.format(checked=paths.PARAMS_CHECKED, params_source=stages.source_file("sagan.params")).rstrip("\n")]
    for stage in PIPELINE:
        lines += _stage_lines(stage.name, f"sagan {stages.command(stage.name)} --params params.yaml",
                              stage.deps + _code(stage.name),
                              [f"      - {key}" for key in stages.param_keys(stage.name)], stage.outs)
    return "\n".join(lines) + "\n"


STUDY_HEADER = """\
# The study {name} (studies/{name}/study.yaml) as DVC stages, beside the paper's pipeline in the
# root dvc.yaml, whose data and FID reference every cell shares:
#   dvc repro studies/{name}/dvc.yaml
# `dvc repro` alone still runs only the paper's pipeline. Written by `sagan stages --write`
# (sagan.dvcfile) from the command registry and the study's cells (sagan.study.design): edit
# study.yaml and the code, not this file, then run `sagan stages --write`. One stage per step
# and cell (`train@CELL`): adding a seed or a variant adds only new stages. The first stage,
# `check`, validates every cell's params (DVC deletes a stage's outputs before it runs it, and a
# cell's are on no cache, so a typo must stop it before any cell) and writes each cell's resolved
# params, cells/CELL/params.json, which the cell's stages depend on: a change of params.yaml, the
# study's base, a variant or a profile file reruns exactly the cells whose params it changes. The
# cells' files stay on the machine that trained them (git-ignored, like checkpoints: `cache:
# false`, so that a checkout never looks for a study that was not run); the results under
# reports/studies/ are small and git-tracked, like metrics.
stages:
"""


def study_text(name: str, params: Params) -> str:
    """studies/NAME/dvc.yaml: the check, one train and one evaluate stage per cell, and the summary."""
    study = load_study(name, params)
    cells = [cell.name for cell in study.cells]
    item = paths.RunOutputs(paths.study_cell_dir(name, "${item}"))
    item_params = paths.cell_params_file(name, "${item}")
    foreach = ["    foreach:", *(f"      - {cell}" for cell in cells), "    do:"]
    lines = [STUDY_HEADER.format(name=name).rstrip("\n")]
    lines += _stage_lines("check", f"sagan study --params params.yaml --study {name} --check",
                          _files(*(stages.source_file(m) for m in ("sagan.params", "sagan.study.design",
                                                                    "sagan.profiles")),
                                 *design.profile_files(study)),
                          ["      - params.yaml:    # every key of both files", f"      - {study.file}:"],
                          tuple(File(paths.cell_params_file(name, cell), cache=False) for cell in cells),
                          ["    wdir: ../.."])
    lines += _stage_lines("train", f"sagan train --params params.yaml --study {name} --cell ${{item}}",
                          _files(item_params, *(f.path for f in PIPELINE_BY_NAME["train"].deps)) + _code("train"),
                          [], _files(*(File(path, cache=False) for path in (
                              item.generator, item.generator_best, item.train_reports_dir))),
                          foreach + ["      wdir: ../.."], indent=6)
    lines += _stage_lines("evaluate", f"sagan evaluate --params params.yaml --study {name} --cell ${{item}}",
                          _files(item_params, item.generator, item.generator_best, item.train_reports_dir,
                                 paths.PREPARED_DIR, paths.SPLIT_FILE, paths.FID_REFERENCE, paths.FID_BOUNDS)
                          + _code("evaluate"),
                          [], tuple(File(path, cache=False) for path in (item.metrics, item.metrics_protocol)),
                          foreach + ["      wdir: ../.."], indent=6)
    lines += _stage_lines("summary", f"sagan study --params params.yaml --study {name}",
                          _files(paths.study_cells_dir(name)) + _code("study"),
                          [f"      - {key}" for key in stages.param_keys("study")] + [f"      - {study.file}:"],
                          (File(paths.StudyReports(name).root, cache=False),), ["    wdir: ../.."])
    return "\n".join(lines) + "\n"


def files(params: Params) -> dict[Path, str]:
    """Every DVC file of the project and the text it should have, the studies' over `params`
    (params.yaml)."""
    out = {Path("dvc.yaml"): pipeline_text()}
    for name in design.study_names():
        out[paths.study_pipeline(name)] = study_text(name, params)
    return out
