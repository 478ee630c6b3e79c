"""Run the smoke profile end to end through DVC and/or Snakemake in a scratch copy.

    python tools/smoke.py [--orchestrator dvc|snakemake|both] [--dir DIR] [--study NAME]
                          [--check | --update-baseline]

The scratch copy is the working tree (tracked and untracked-but-not-ignored files) with the
smoke profile as its params.yaml (written as `sagan params --profile smoke` writes it), in a git repo of its own, so the user's workspace, caches
and MLflow store are never touched. The DVC project comes with the copy (the committed `.dvc/`),
so the demo and the tests run what a user clones, with no `dvc init` of their own. The
integration tests use the same functions, so the demo and the tests cannot drift apart.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sagan import paths
from sagan.params import DEFAULT_PARAMS
from sagan.profiles import write_profile

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROFILE = "smoke"


def orchestrator_env() -> dict[str, str]:
    """The environment for orchestrator subprocesses: this interpreter's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)  # the scratch project's own SQLite store
    env.pop("SAGAN_ORCHESTRATOR", None)
    env.setdefault("GIT_AUTHOR_NAME", "sagan-smoke")
    env.setdefault("GIT_AUTHOR_EMAIL", "smoke@localhost")
    env.setdefault("GIT_COMMITTER_NAME", "sagan-smoke")
    env.setdefault("GIT_COMMITTER_EMAIL", "smoke@localhost")
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=orchestrator_env(), check=check, **kw)


def working_tree_files(root: Path = REPO_ROOT) -> list[str]:
    """Tracked and untracked-but-not-ignored files, less the results of a pipeline run that git may
    hold (dvc.lock, the metrics and run records): a scratch project starts with no run."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                         capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0")
            if f and (root / f).is_file() and f != "dvc.lock" and paths.written_by(f) is None]


def make_scratch_project(dest: Path, profile: str = DEFAULT_PROFILE, root: Path = REPO_ROOT) -> Path:
    """Copy the working tree to `dest` (replacing it), write params.yaml for `profile` (and each
    study's grid for it, studies/NAME/PROFILE.yaml, as its study.yaml), and make it a git repo of
    its own."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    for rel in working_tree_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    write_profile(profile, dest / DEFAULT_PARAMS, root=dest)
    grids = list((dest / paths.STUDIES_DIR).glob(f"*/{profile}.yaml"))  # the studies' grids for this profile
    for grid in grids:
        shutil.copy2(grid, grid.with_name(paths.STUDY_FILE_NAME))
    quiet = dict(capture_output=True)
    if grids:  # their DVC files, written for their cells
        run(["sagan", "stages", "--write"], dest, check=True, **quiet)
    run(["git", "init", "-q"], dest, **quiet)
    run(["git", "add", "-A"], dest, **quiet)
    run(["git", "commit", "-qm", f"scratch copy with profile {profile}"], dest, **quiet)
    return dest


def dvc_repro(project: Path, **kw) -> subprocess.CompletedProcess:
    return run(["dvc", "repro"], project, **kw)


def snakemake_run(project: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return run(["snakemake", "--cores", "all", "--rerun-incomplete", *extra], project, **kw)


def study_run(project: Path, orchestrator: str, study: str) -> subprocess.CompletedProcess:
    """studies/README.md's study command for `orchestrator`: its own DVC pipeline, or its Snakemake target."""
    if orchestrator == "dvc":
        return run(["dvc", "repro", str(paths.study_pipeline(study))], project, check=False)
    return snakemake_run(project, f"study_{study}", check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sagan.smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--orchestrator", choices=("dvc", "snakemake", "both"), default="both")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "sagan-smoke",
                        help="scratch parent directory (default: %(default)s)")
    parser.add_argument("--study", metavar="NAME", help="then run the study studies/NAME/ on its smoke grid "
                        "(studies/NAME/smoke.yaml), e.g. attention")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="then run the FID regression check")
    group.add_argument("--update-baseline", action="store_true",
                       help="then write this run's FID into tests/baselines/smoke.json")
    args = parser.parse_args(argv)

    orchestrators = ["dvc", "snakemake"] if args.orchestrator == "both" else [args.orchestrator]
    for orch in orchestrators:
        project = make_scratch_project(args.dir / orch)
        print(f"== smoke profile through {orch} in {project}", flush=True)
        start = time.monotonic()
        try:
            (dvc_repro if orch == "dvc" else snakemake_run)(project)
        except subprocess.CalledProcessError as exc:
            print(f"smoke: {orch} failed with exit code {exc.returncode}", file=sys.stderr)
            return 1
        if args.study and study_run(project, orch, args.study).returncode:
            print(f"smoke: the study '{args.study}' through {orch} failed", file=sys.stderr)
            return 1
        print(f"== {orch}: done in {time.monotonic() - start:.0f} s; report: {project / paths.REPORT_HTML}")
        if args.study:
            print(f"   study report: {project / paths.StudyReports(args.study).report_html}")
        print(f"   MLflow UI: mlflow ui --backend-store-uri sqlite:///{project / 'mlflow.db'}")
        if args.check or args.update_baseline:
            cmd = ["sagan", "check-fid", "--baseline", str(REPO_ROOT / "tests/baselines/smoke.json")]
            if run(cmd + (["--update"] if args.update_baseline else []), project, check=False).returncode:
                return 1
            if args.update_baseline:
                break  # one orchestrator's run defines the baseline
    return 0


if __name__ == "__main__":
    sys.exit(main())
