"""No-op overhead of the two orchestrators on a completed smoke pipeline.

    python benchmarks/orchestration.py [--dvc-project DIR --snakemake-project DIR] [--repeats 5]

Without the project dirs it first runs the smoke profile through DVC and Snakemake in scratch copies
(python tools/smoke.py), then times, on each completed copy, the command a user runs to learn
that nothing is out of date: `dvc repro` (no stage runs) and `snakemake -n` (dry run).
Target (issue 6): each <= 3 s wall on the 2-core CI machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from smoke import dvc_repro, make_scratch_project, run, snakemake_run  # noqa: E402

COMMANDS = {"dvc": ["dvc", "repro"], "snakemake": ["snakemake", "-n", "--cores", "all"]}


def time_command(cmd: list[str], project: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run(cmd, project, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if cmd[0] == "snakemake" and "Nothing to be done" not in out.stdout + out.stderr:
            raise SystemExit(f"{project}: snakemake -n found work to do; the pipeline is not complete")
        if cmd[0] == "dvc" and "Running stage" in out.stdout:
            raise SystemExit(f"{project}: dvc repro ran a stage; the pipeline was not complete")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dvc-project", type=Path, help="a project completed by dvc repro")
    parser.add_argument("--snakemake-project", type=Path, help="a project completed by snakemake")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    projects = {}
    for tool in COMMANDS:
        given = getattr(args, f"{tool}_project")
        if given:
            projects[tool] = given
            continue
        projects[tool] = make_scratch_project(Path(tempfile.gettempdir()) / "sagan-bench" / tool)
        (dvc_repro if tool == "dvc" else snakemake_run)(projects[tool], capture_output=True)

    print(f"{'command':<28}{'median s':>10}{'min s':>10}{'max s':>10}  target")
    for tool, cmd in COMMANDS.items():
        t = time_command(cmd, projects[tool], args.repeats)
        print(f"{' '.join(cmd):<28}{statistics.median(t):>10.2f}{min(t):>10.2f}{max(t):>10.2f}  <= 3 s")


if __name__ == "__main__":
    main()
