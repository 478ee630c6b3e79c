"""The Markdown docs as a reader follows them: every relative link and `#anchor` resolves inside
the repository, and every `sagan` command and `make` target that a guide names exists.

Anchors follow GitHub's heading slugs: lowercase, punctuation dropped (letters, digits, spaces,
`-` and `_` kept), spaces to `-`, and `-1`, `-2`, ... for a repeated heading. Runs in well under a
second: no subprocess, the CLI's parser is built in-process.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from sagan.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
SAGAN_COMMAND = re.compile(r"(?<![\w./-])sagan\s+([a-z][a-z0-9-]*)")
MAKE_TARGET = re.compile(r"(?<![\w./-])make\s+([a-z][a-z0-9-]*)")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """The project's Markdown files: what git tracks or would add (ignored outputs such as a
    generated reports/report.md left out); every *.md outside hidden and venv folders without git."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
                             cwd=root, capture_output=True, text=True, check=True).stdout
        files = [root / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in root.rglob("*.md")
                 if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(p for p in files if p.is_file())


def split_code(text: str) -> tuple[str, list[str]]:
    """The text with fenced blocks and code spans blanked out, and the code they held."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            prose.append("")
            continue
        if fenced:
            code.append(line)
            prose.append("")
        else:
            prose.append(line)
    joined = "\n".join(prose)
    code += [m.group(2) for m in CODE_SPAN.finditer(joined)]
    return CODE_SPAN.sub(lambda m: " " * len(m.group(0)), joined), code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    targets = [m.group(1) for m in INLINE_LINK.finditer(prose)]
    targets += [m.group(1) for line in prose.splitlines() if (m := REFERENCE_DEF.match(line))]
    return targets


def broken_links(root: Path = ROOT) -> list[str]:
    """One line per link that has no target: `FILE: [TARGET] why`."""
    problems = []
    for md in markdown_files(root):
        where = md.relative_to(root)
        for target in links(md):
            if re.match(r"https?://", target):
                continue
            if not target or re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("/"):
                problems.append(f"{where}: [{target}] leads outside the repository (only http(s) URLs may)")
                continue
            file_part, _, anchor = target.partition("#")
            dest = (md.parent / unquote(file_part)).resolve() if file_part else md
            if not dest.is_relative_to(root.resolve()):
                problems.append(f"{where}: [{target}] leads outside the repository (only http(s) URLs may)")
            elif not dest.exists():
                problems.append(f"{where}: [{target}] no such file: {dest.relative_to(root.resolve())}")
            elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
                problems.append(f"{where}: [{target}] no heading with the anchor #{anchor} in "
                                f"{dest.relative_to(root.resolve())}")
    return problems


def named(pattern: re.Pattern, root: Path = ROOT) -> dict[str, set[str]]:
    """What `pattern` captures in the code of each Markdown file: {name: {files}}."""
    found: dict[str, set[str]] = {}
    for md in markdown_files(root):
        _, code = split_code(md.read_text(encoding="utf-8"))
        for snippet in code:
            for m in pattern.finditer(snippet):
                found.setdefault(m.group(1), set()).add(str(md.relative_to(root)))
    return found


def sagan_commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def make_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    targets = set()
    for line in makefile.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+(?:\s+[A-Za-z0-9_.-]+)*)\s*:(?!=)", line)
        if m and not line.startswith((".", "\t")):
            targets.update(m.group(1).split())
    return targets


def test_the_slug_rules_are_githubs():
    assert slug("Quick start") == "quick-start"
    assert slug("FID (`benchmarks/fid.py`)") == "fid-benchmarksfidpy"
    assert slug("The attention study: does self-attention help?") == "the-attention-study-does-self-attention-help"
    assert slug("`dvc repro --dry` on a fresh clone") == "dvc-repro---dry-on-a-fresh-clone"
    assert slug("Inception (`benchmarks/inception_layout.py`)") == "inception-benchmarksinception_layoutpy"


def test_every_markdown_file_is_checked():
    files = {str(p.relative_to(ROOT)) for p in markdown_files()}
    for guide in ("README.md", "CONTRIBUTING.md", "docs/experiments.md", "docs/troubleshooting.md",
                  "docs/benchmarks.md", "studies/README.md", "workflow/profiles/README.md",
                  "reports/README.md", "data/README.md"):
        assert guide in files


def test_every_relative_link_and_anchor_resolves():
    problems = broken_links()
    assert not problems, "links without a target:\n" + "\n".join(problems)


def test_a_renamed_guide_and_a_changed_heading_are_reported(tmp_path):
    """The check above can fail: in a copy of the docs, rename a guide and a heading."""
    for md in markdown_files():
        rel = md.relative_to(ROOT)
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(md, tmp_path / rel)
    for other in ("Makefile", "params.yaml"):
        shutil.copy(ROOT / other, tmp_path / other)
    for folder in ("workflow/profiles/slurm", "workflow/profiles/slurm-local"):
        shutil.copytree(ROOT / folder, tmp_path / folder, dirs_exist_ok=True)
    before = set(broken_links(tmp_path))  # none: the copy holds every file the docs link to

    (tmp_path / "docs/experiments.md").rename(tmp_path / "docs/comparing-runs.md")
    troubleshooting = tmp_path / "docs/troubleshooting.md"
    troubleshooting.write_text(troubleshooting.read_text().replace("## Inception weights offline",
                                                                    "## Inception weights without internet"))
    new = [p for p in broken_links(tmp_path) if p not in before]
    assert "README.md: [docs/experiments.md] no such file: docs/experiments.md" in new
    assert ("docs/troubleshooting.md: [#inception-weights-offline] no heading with the anchor "
            "#inception-weights-offline in docs/troubleshooting.md") in new


def test_a_link_out_of_the_repository_is_reported(tmp_path):
    (tmp_path / "README.md").write_text("[up](../elsewhere.md) [abs](/etc/passwd) [file](file:///x)"
                                        " [web](https://example.org/#x)\n")
    problems = broken_links(tmp_path)
    assert len(problems) == 3 and all("leads outside the repository" in p for p in problems)


def test_every_sagan_command_the_guides_name_exists():
    commands = sagan_commands()
    found = named(SAGAN_COMMAND)
    assert {"train", "sample", "params"} <= set(found)  # the parse finds what the guides name
    missing = {cmd: sorted(files) for cmd, files in found.items() if cmd not in commands}
    assert not missing, f"`sagan CMD` named in the docs but not a command of `sagan --help`: {missing}"
    for cmd in found:
        with pytest.raises(SystemExit) as exit_:  # `sagan CMD --help` prints its usage and exits 0
            build_parser().parse_args([cmd, "--help"])
        assert exit_.value.code == 0


def test_every_make_target_the_guides_name_exists():
    targets = make_targets()
    found = named(MAKE_TARGET)
    assert {"repro", "test", "smoke"} <= set(found)
    missing = {t: sorted(files) for t, files in found.items() if t not in targets}
    assert not missing, f"`make TARGET` named in the docs but not in the Makefile: {missing}"


def test_the_front_page_stays_a_front_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert not re.search(r"[0-9]+ min [0-9]+ s", readme), "measured figures belong in docs/benchmarks.md"
    assert "`make repro`" in readme and "`make test`" in readme
    for guide in ("docs/experiments.md", "studies/README.md", "workflow/profiles/README.md",
                  "docs/troubleshooting.md", "CONTRIBUTING.md", "docs/benchmarks.md"):
        assert f"]({guide})" in readme, f"README's read-next table lacks {guide}"
