"""Wall time of the test session's two pipeline scenarios (tests/scenarios.py), run side by side
as conftest.py runs them, without the unit tests.

    python benchmarks/scenarios.py

The longer scenario is the critical path of `pytest`'s wall time (docs/benchmarks.md, "Test suite
and CI"); this shows which one it is and by how much.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as tests/conftest.py sets it
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tools")]

import scenarios  # noqa: E402
from smoke import make_scratch_project  # noqa: E402


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="sagan-bench-scenarios-"))
    start = time.monotonic()

    def timed(name: str, build, project: Path) -> tuple[str, float]:
        build(project)
        return name, time.monotonic() - start

    with ThreadPoolExecutor(len(scenarios.SCENARIOS)) as pool:
        futures = [pool.submit(timed, name, build, make_scratch_project(root / name / "project"))
                   for name, (build, _) in scenarios.SCENARIOS.items()]
        results = [f.result() for f in futures]
    print("| scenario | wall s (from the session's start) |\n|---|---:|")
    for name, seconds in results:
        print(f"| {name} | {seconds:.0f} |")
    print(f"\ncritical path: {max(results, key=lambda r: r[1])[0]}; scratch projects in {root}")


if __name__ == "__main__":
    main()
