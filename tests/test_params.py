"""The params contract: params.yaml is the paper, every profile parses, bad keys stop with one line."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from sagan.errors import SaganError
from sagan.params import Params, flatten, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
PROFILES = [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


def test_params_yaml_is_the_papers_configuration():
    p = load_params(ROOT / "params.yaml")
    assert (p.prepare.crop, p.prepare.size, p.split.val_fraction) == (160, 64, 0.2)
    assert (p.train.lr_g, p.train.lr_d, p.train.beta1, p.train.beta2) == (1e-4, 4e-4, 0.5, 0.999)
    assert (p.train.loss, p.model.leaky_slope, p.model.attention_after) == ("bce", 0.2, 3)
    assert p.model.spectral_norm and p.model.g_batchnorm and p.model.d_batchnorm
    assert p.train.ema_decay == 0.0 and p.fid.num_samples == 50000 and p.fid.weights == "auto"


def test_params_yaml_spells_out_every_default():
    """params.yaml and the dataclass defaults must not drift apart: the file is the source of truth."""
    assert flatten(load_params(ROOT / "params.yaml")) == flatten(Params())


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_profile_is_complete_and_valid(path):
    raw = yaml.safe_load(path.read_text())
    parse_params(raw, where=path.name)
    # complete: every section and key is spelled out, so each profile is self-describing
    defaults = dataclasses.asdict(Params())
    assert {s: set(sec) for s, sec in raw.items()} == {s: set(sec) for s, sec in defaults.items()}


def test_smoke_profile_is_offline_and_labelled():
    p = load_params(ROOT / "configs" / "smoke.yaml")
    assert p.data.source == "synthetic" and p.fid.weights == "standin" and p.train.device == "cpu"
    assert p.mlflow.profile == "smoke"


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
    f.write_text("train:\n  lr_g: 1e-4\n")
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
