"""The params contract: params.yaml is the paper, profiles are overlays, bad keys stop with one line."""
import os
from pathlib import Path

import pytest

from helpers import write_params
from sagan.errors import SaganError
from sagan.cli import main
from sagan.params import Params, flatten, load_params, parse_params
from sagan.profiles import differences, profile_names, read_profile, render

ROOT = Path(__file__).resolve().parents[1]
PROFILES = profile_names(ROOT)


def test_params_yaml_is_the_papers_configuration():
    p = load_params(ROOT / "params.yaml")
    assert (p.prepare.crop, p.prepare.size, p.split.val_fraction) == (160, 64, 0.2)
    assert (p.train.lr_g, p.train.lr_d, p.train.beta1, p.train.beta2) == (1e-4, 4e-4, 0.5, 0.999)
    assert (p.train.loss, p.model.leaky_slope, p.model.attention_after) == ("bce", 0.2, 3)
    assert p.model.spectral_norm and p.model.g_batchnorm and p.model.d_batchnorm
    assert p.train.ema_decay == 0.0 and p.fid.num_samples == 50000 and p.fid.weights == "auto"


def test_params_yaml_is_written_from_the_declared_defaults():
    """The dataclass defaults own the paper's values; params.yaml is derived from them, never edited apart."""
    assert (ROOT / "params.yaml").read_text() == render(read_profile("paper", ROOT)), \
        "params.yaml is stale: run `sagan params --profile paper`"


@pytest.mark.parametrize("name", PROFILES)
def test_a_profile_lists_only_what_it_changes_each_with_a_reason(name):
    profile = read_profile(name, ROOT)
    changed = differences(profile.params)
    listed = {f"{s}.{k}" for s, keys in profile.changes.items() for k in keys}
    assert listed == {k.rsplit(".", 1)[0] if k.count(".") > 1 else k for k in changed}, \
        "a profile must not repeat the paper's values"
    assert set(profile.reasons) == listed and all(profile.reasons.values()), "every change needs a reason"
    assert profile.params.mlflow.profile == name, "runs are labelled with the profile's file name"


def test_sagan_params_writes_the_merged_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # profiles are read from configs/ under the working directory
    out = tmp_path / "params.yaml"
    assert main(["params", "--profile", "smoke", "--params", str(out)]) == 0
    p = load_params(out)
    assert (p.prepare.size, p.fid.weights, p.mlflow.profile) == (32, "standin", "smoke")  # the profile's
    assert (p.prepare.crop, p.train.loss, p.model.leaky_slope) == (160, "bce", 0.2)  # the paper's
    text = out.read_text()
    assert "  size: 32                  # smoke: " in text and "  crop: 160                 # centre crop (paper)" in text
    assert f"29 of {len(flatten(Params()))} keys differ from the paper: data.source='synthetic'" in capsys.readouterr().out


def test_unknown_profile_and_bad_profile_keys_are_one_line(tmp_path):
    with pytest.raises(SaganError, match=r"profile 'nope': configs/nope.yaml not found \(hint: known profiles: "
                                         r"paper, improved, smoke\)"):
        read_profile("nope", ROOT)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/typo.yaml").write_text("train:\n  lr_dd: 1.0e-3   # faster\n")
    with pytest.raises(SaganError, match=r"configs/typo.yaml: unknown param 'train.lr_dd' \(hint: did you mean"):
        read_profile("typo", tmp_path)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"train": {"lr_gg": 1}}, "unknown param 'train.lr_gg' (hint: did you mean 'train.lr_g'?)"),
        ({"trian": {}}, "unknown param 'trian' (hint: did you mean 'train'?)"),
        ({"train": {"batch_size": "64"}}, "'train.batch_size' must be int, got '64'"),
        ({"train": {"batch_size": 0}}, "'train.batch_size' must be a number > 0; got 0"),
        ({"train": {"deterministic": 1}}, "'train.deterministic' must be bool, got 1"),
        ({"train": {"loss": "wgan"}}, "'train.loss' must be one of bce, hinge; got 'wgan'"),
        ({"split": {"val_fraction": 1.5}}, "'split.val_fraction' must be a number in (0, 1); got 1.5"),
        ({"prepare": {"size": 48}}, "'prepare.size' must be one of 32, 64, 128; got 48"),
        ({"data": {"urls": {"zipp": "x"}}}, "unknown param 'data.urls.zipp'"),
        ({"model": [1, 2]}, "'model' must be a mapping of keys, got list"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(raw, message):
    with pytest.raises(SaganError) as err:
        parse_params(raw, where="params.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value) and str(err.value).startswith("params.yaml: ")


def test_scientific_notation_strings_are_floats(tmp_path):
    # PyYAML (YAML 1.1) reads `1e-4` without a dot as a string; users write it that way.
    f = tmp_path / "p.yaml"
    f.write_text(render(read_profile("paper", ROOT)).replace("  lr_g: 0.0001", "  lr_g: 1e-4"))
    assert load_params(f).train.lr_g == 1e-4


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SaganError, match="nope.yaml: params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(SaganError, match="bad.yaml: not valid YAML"):
        load_params(bad)


def test_flatten_uses_dotted_keys():
    flat = flatten(Params())
    assert flat["train.lr_d"] == 4e-4 and flat["data.urls.zip"] == "" and flat["prepare.crop"] == 160


@pytest.mark.parametrize("text, message", [
    ("", "p.yaml: empty (hint: a params file spells out every key"),
    ("prepare:\n  size: 32\n", "p.yaml: missing param 'prepare.crop' (hint: "),
    (None, "p.yaml: missing section 'report' (hint: "),
    ("data: {urls: {zip: ''}}\n", "p.yaml: missing param 'data.urls.partition' (hint: "),
])
def test_an_empty_or_partial_params_file_is_refused(tmp_path, text, message):
    """Before, an empty file or a missing key silently meant the paper's value: `sagan prepare
    --params empty.yaml` replaced the 32 px smoke data with 64 px data."""
    if text is None:  # a complete file less its last section
        text = render(read_profile("paper", ROOT)).split("\nreport:")[0] + "\n"
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(SaganError) as err:
        load_params(f)
    assert str(err.value).startswith(f"{f.parent}/{message}")


def test_a_key_given_twice_is_refused_not_last_one_wins(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  lr_d: 4.0e-4\n  lr_d: 1.0e-2\n")
    with pytest.raises(SaganError, match=r"params.yaml: not valid YAML \(duplicate key 'lr_d' at line 3\)$"):
        load_params(f)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/twice.yaml").write_text("train:\n  seed: 1  # a\ntrain:\n  seed: 2  # b\n")
    with pytest.raises(SaganError, match=r"configs/twice.yaml: not valid YAML \(duplicate key 'train' at line 3\)"):
        read_profile("twice", tmp_path)


def test_the_best_generator_without_evaluations_during_training_is_refused(tmp_path):
    """Before, the combination was accepted and the report claimed a best generator "at step None"."""
    f = write_params(tmp_path / "p.yaml", evaluate={"generator": "best"}, train={"eval_every": 0})
    with pytest.raises(SaganError) as err:
        load_params(f)
    assert str(err.value) == (f"{f}: 'evaluate.generator' is 'best' but 'train.eval_every' is 0, so no generator "
                              "is scored during training (hint: set train.eval_every > 0, or evaluate.generator: last)")


def test_a_profile_is_labelled_with_its_file_name_unless_it_says_otherwise(tmp_path, monkeypatch):
    """Before, a profile that did not set mlflow.profile labelled its runs 'paper'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/seed1.yaml").write_text("train:\n  seed: 1  # another seed\n")
    (tmp_path / "configs/named.yaml").write_text("mlflow:\n  profile: custom  # its own label\n")
    for name, label in (("seed1", "seed1"), ("named", "custom")):
        assert main(["params", "--profile", name, "--params", f"{name}.yaml"]) == 0
        assert load_params(f"{name}.yaml").mlflow.profile == label


def test_a_directory_given_as_the_params_file_is_one_line_saying_so(tmp_path, monkeypatch, capsys):
    """Before, `sagan params --params DIR` ended in an IsADirectoryError traceback, and a stage
    said a directory's params file was "not found"."""
    monkeypatch.chdir(ROOT)  # configs/
    read = f"{tmp_path}: is a directory, not a params file (hint: give the params file's path, e.g. params.yaml)"
    written = f"{tmp_path}: is a directory, so it cannot be written as a file (hint: give the path of the file to write)"
    for argv, message in ((["params"], read), (["prepare"], read), (["params", "--profile", "smoke"], written)):
        assert main([*argv, "--params", str(tmp_path)]) == 1
        assert capsys.readouterr().err == f"sagan {argv[0]}: error: {message}\n"
    assert os.listdir(tmp_path) == []  # nothing written into it
