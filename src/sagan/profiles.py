"""`sagan params [--profile NAME]`: write params.yaml as the paper's values plus a profile's changes.

params.yaml is the one file both orchestrators track. The paper's values and their comments are
the defaults declared in `sagan.params`; a profile, `configs/NAME.yaml`, lists only the keys it
changes, each with its reason as the line's comment. `sagan params --profile NAME` validates the
profile and writes the merged, commented params.yaml; `dvc exp run -S key=value` then edits that
file as usual. Without --profile, it validates params.yaml and prints how it differs from the paper.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

from sagan.atomic import atomic_path
from sagan.errors import SaganError
from sagan.params import Params, flatten, parse_params, parse_yaml

PROFILES_DIR = Path("configs")
PAPER = "paper"
COMMENT_COLUMN = 28

# `  key: value  # reason` inside a section of a profile file.
_REASON = re.compile(r"^\s+(\w+)\s*:.*?\s#\s*(.*?)\s*$")
_SECTION = re.compile(r"^(\w+)\s*:")


def profile_names(root: Path = Path(".")) -> list[str]:
    return [PAPER, *sorted(p.stem for p in (root / PROFILES_DIR).glob("*.yaml"))]


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    changes: dict  # the profile file's mapping: section -> {key: value}
    reasons: dict[str, str]  # "section.key" -> the comment on that line

    @property
    def labelled_changes(self) -> dict:
        """The profile's changes, its runs labelled with its name (`mlflow.profile`) unless it sets
        a label of its own."""
        changes = self.changes
        mlflow = (changes.get("mlflow") or {}) if isinstance(changes, dict) else None
        if isinstance(mlflow, dict):  # anything else is left to parse_params to refuse
            changes = {**changes, "mlflow": {"profile": self.name, **mlflow}}
        return changes

    @property
    def params(self) -> Params:
        """The paper's params with the profile's changes, labelled."""
        return parse_params(self.labelled_changes, where=str(PROFILES_DIR / f"{self.name}.yaml"), partial=True)


def _reasons(text: str) -> dict[str, str]:
    """The comment of each `section.key` line of a profile file."""
    reasons, section = {}, None
    for line in text.splitlines():
        if match := _SECTION.match(line):
            section = match.group(1)
        elif section and (match := _REASON.match(line)):
            reasons[f"{section}.{match.group(1)}"] = match.group(2)
    return reasons


def read_profile(name: str, root: Path = Path(".")) -> Profile:
    """The profile `name` (`paper` is the defaults themselves), validated."""
    if name == PAPER:
        return Profile(PAPER, {}, {})
    path = root / PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SaganError(f"profile '{name}': {PROFILES_DIR / (name + '.yaml')} not found",
                         hint=f"known profiles: {', '.join(profile_names(root))}")
    text = path.read_text()
    profile = Profile(name, parse_yaml(text, str(PROFILES_DIR / path.name)) or {}, _reasons(text))
    profile.params  # validate now: one line naming the bad key
    return profile


def _yaml_value(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()
    return text.removesuffix("...").strip()  # PyYAML ends a bare scalar document with "..."


def render(profile: Profile) -> str:
    """params.yaml for `profile`: every key, the paper's comment or the profile's reason beside it."""
    params = profile.params
    values = dataclasses.asdict(params)
    if profile.name == PAPER:
        header = ["# The paper's configuration (Bury, IVUS 2024): every key, validated by src/sagan/params.py.",
                  "# Written by `sagan params --profile paper`; profiles in configs/ list only what they",
                  "# change (`sagan params --profile smoke`). Edit freely, or `dvc exp run -S key=value`."]
    else:
        header = [f"# Profile '{profile.name}': the paper's configuration with the changes in "
                  f"{PROFILES_DIR}/{profile.name}.yaml.",
                  f"# Written by `sagan params --profile {profile.name}`; `sagan params --profile paper` "
                  "restores the paper.",
                  "# Every key is validated by src/sagan/params.py. Edit freely, or `dvc exp run -S key=value`."]
    lines = list(header)
    for section in dataclasses.fields(Params):
        lines.append(f"{section.name}:")
        for f in dataclasses.fields(getattr(params, section.name)):
            dotted = f"{section.name}.{f.name}"
            line = f"  {f.name}: {_yaml_value(values[section.name][f.name])}"
            if dotted in profile.reasons:
                comment = f"{profile.name}: {profile.reasons[dotted]}"
            else:
                comment = f.metadata.get("doc") or " | ".join(map(str, f.metadata.get("choices") or ()))
            lines.append(f"{line.ljust(COMMENT_COLUMN - 2)}  # {comment}" if comment else line)
    return "\n".join(lines) + "\n"


def differences(params: Params) -> dict[str, tuple]:
    """dotted key -> (paper value, this value), for every key that differs from the paper."""
    paper, current = flatten(Params()), flatten(params)
    return {k: (paper[k], v) for k, v in current.items() if v != paper[k]}


def write_profile(name: str, out: Path, root: Path = Path(".")) -> Profile:
    profile = read_profile(name, root)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(render(profile))
    return profile
