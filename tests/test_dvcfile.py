"""The DVC files are written from the code (sagan.dvcfile, `sagan stages --write`): the committed
ones are exactly what the writer makes, and a stage that gains an import makes them stale."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sagan import dvcfile, stages
from sagan.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_dvc_files_are_what_the_writer_writes(monkeypatch):
    monkeypatch.chdir(ROOT)
    written = dvcfile.files(load_params("params.yaml"))
    assert set(written) == {Path("dvc.yaml"), Path("studies/attention/dvc.yaml"), Path("studies/profiles/dvc.yaml")}
    for path, text in written.items():
        assert (ROOT / path).read_text() == text, f"{path}: run `sagan stages --write`"


@pytest.fixture
def source_copy(tmp_path, monkeypatch):
    """A copy of the sources and DVC files to edit, as the working directory."""
    for item in ("src", "studies", "configs", "dvc.yaml", "params.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, tmp_path / item)
    monkeypatch.chdir(tmp_path)
    stages._tree.cache_clear()  # the AST cache is per module name, not per directory
    yield tmp_path
    stages._tree.cache_clear()


def test_a_stage_that_gains_an_import_makes_the_committed_files_stale(source_copy):
    loop = source_copy / "src/sagan/train/loop.py"
    loop.write_text(loop.read_text() + "\nfrom sagan.metrics import gate  # noqa: E402,F401\n")
    changed = {path for path, text in dvcfile.files(load_params("params.yaml")).items() if path.read_text() != text}
    assert changed == {Path("dvc.yaml"), Path("studies/attention/dvc.yaml"), Path("studies/profiles/dvc.yaml")}
    assert "src/sagan/metrics/gate.py" in dvcfile.pipeline_text().split("\n  train:")[1].split("\n\n")[0]
    check = subprocess.run([sys.executable, "-m", "sagan", "stages", "--check"], capture_output=True, text=True)
    assert check.returncode == 1
    assert check.stderr == ("sagan stages: error: dvc.yaml, studies/attention/dvc.yaml, studies/profiles/dvc.yaml: "
                            "not what the code declares (hint: run `sagan stages --write` and commit the result)\n")
    write = subprocess.run([sys.executable, "-m", "sagan", "stages", "--write"], capture_output=True, text=True)
    assert write.stdout == "sagan stages: wrote dvc.yaml, studies/attention/dvc.yaml, studies/profiles/dvc.yaml\n"
    assert subprocess.run([sys.executable, "-m", "sagan", "stages", "--check"]).returncode == 0
