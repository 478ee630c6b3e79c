"""The registry of `sagan` commands, and what an orchestrator needs to know about each pipeline
stage, read from its command's source.

- Its command module: `sagan.commands.NAME` (COMMANDS), the only code that reads the command line.
- Its param keys: the command module's `PARAM_KEYS`, the params whose values change its outputs.
- Its code deps: the sagan modules it runs (its import closure) less the shared plumbing below.

Both are read from the source with `ast`, without importing the command (which would import
torch), so the Snakefile can use them on every `snakemake -n`; the DVC files are written from
them (sagan.dvcfile).
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

# Every command, by its `sagan` name: the pipeline stages first, in graph order.
COMMANDS = {name: f"sagan.commands.{name.replace('-', '_')}" for name in (
    "download", "prepare", "split", "fid-ref", "fid-bounds", "train", "evaluate", "report", "study", "sample",
    "check-fid", "params", "stages")}
# The project's sources, relative to the project root (the working directory) like every path of
# the pipeline: the code deps are the project's files, whichever checkout sagan was installed from.
SRC = Path("src")
# The stages in graph order, by their dvc.yaml / Snakemake names.
STAGES = ("download", "prepare", "split", "fid_ref", "fid_bounds", "train", "evaluate", "report")
# DVC's stage before them: DVC deletes a stage's outputs before it runs the stage, so a typo in
# params.yaml (`dvc exp run -S train.lr_g=abc`) cost the trained generator before `sagan train`
# refused it. `sagan params` validates the whole file first and the stage writes a stamp
# (paths.PARAMS_CHECKED) that download, and through it every stage, depends on; the same stamp
# every time changes no hash downstream. The Snakefile validates params.yaml while it parses.
PARAMS_CHECK = "params"

# Modules a stage imports but that are deliberately not its code deps. They decide how a result
# is parsed, placed, written or reported, not what it is; listing them would invalidate every
# cached dataset and model on any edit. Package __init__ files are not followed (they compute no
# result: docstrings, and the command-line arguments that commands share).
SHARED_PLUMBING = {
    "sagan.params": "parses and validates params.yaml; the values themselves are param deps",
    "sagan.paths": "output path constants and the missing-input error; a changed path changes the deps/outs",
    "sagan.atomic": "write-to-temp-then-rename; changes how files are written, not their bytes",
    "sagan.errors": "the SaganError type; message text only",
    "sagan.stages": "this module: stage names, param keys and code deps (a study checks its base against them)",
    "sagan.study.design": "which params a study cell has (--study/--cell); the values themselves are param deps",
}


def command(stage: str) -> str:
    return stage.replace("_", "-")


def module(stage: str) -> str:
    return COMMANDS[command(stage)]


def source_file(module_name: str) -> Path:
    return SRC.joinpath(*module_name.split(".")).with_suffix(".py")


@cache
def _tree(module_name: str) -> ast.Module:
    return ast.parse(source_file(module_name).read_text())


def import_closure(module_name: str) -> set[str]:
    """Every sagan module that `module_name` imports, transitively, at module level or inside
    functions (commands import the library lazily), found by walking the source's AST. The
    shared plumbing is not followed: what it imports is not the stage's code."""
    seen, todo = set(), [module_name]
    while todo:
        name = todo.pop()
        if name in seen or not source_file(name).is_file():  # a package, or not ours
            continue
        seen.add(name)
        if name in SHARED_PLUMBING:
            continue
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from sagan.report import figures` imports the submodule sagan.report.figures.
                todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return {m for m in seen if m.startswith("sagan.")}


def code_deps(stage: str) -> list[str]:
    """The source files whose edits must rerun `stage`, relative to the project root."""
    modules = import_closure(module(stage)) - set(SHARED_PLUMBING)
    return sorted(str(source_file(m)) for m in modules)


def param_keys(stage: str) -> tuple[str, ...]:
    """The stage's command's declared `PARAM_KEYS` (dotted keys or whole sections)."""
    for node in _tree(module(stage)).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PARAM_KEYS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise LookupError(f"{source_file(module(stage))} declares no PARAM_KEYS")
