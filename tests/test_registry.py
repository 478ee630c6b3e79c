"""The generator as an MLflow model: logged to its run, one registered version per run, tagged
with its FID, loaded back by `sagan sample --model-uri` with the same pixels as the file, and
never unpickled."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import pytest
import torch
from PIL import Image

from conftest import PicklePayload, tiny_params, write_params
from sagan import cli
from sagan.model import registry
from sagan.model.io import save_generator
from sagan.model.networks import Generator
from sagan.params import ModelParams

NAME = "test-generator"
SIZE = 32


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A params file on a fresh SQLite store that registers under NAME, and the generator file of
    a tiny untrained model; the working directory is tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params_file = write_params(tmp_path / "params.yaml", "smoke",
                               mlflow={"tracking_uri": uri, "experiment": "t", "registered_model": NAME})
    mlflow_params = dataclasses.replace(tiny_params().mlflow, tracking_uri=uri, experiment="t", registered_model=NAME)
    return params_file, mlflow_params, mlflow.MlflowClient(uri)


def _generator_file(path: Path, model: ModelParams, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_generator(path, Generator(model, SIZE), model, SIZE, ema=False)
    return path


def _new_run(client) -> str:
    experiment = client.get_experiment_by_name("t")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("t")
    return client.create_run(experiment_id).info.run_id


def _sample(params_file: Path, out: str, *source: str) -> bytes:
    assert cli.main(["sample", "--params", str(params_file), "--n", "9", "--seed", "3", "--out", out, *source]) == 0
    return Image.open(out).tobytes()


def test_log_register_tag_and_sample_back_the_same_pixels(store, tmp_path):
    params_file, mlflow_params, client = store
    generator_file = _generator_file(tmp_path / "generator.pt", tiny_params().model)
    versions = []
    for _ in range(2):  # one version per training run
        run_id = _new_run(client)
        info = registry.log_generator(mlflow_params, run_id, generator_file)
        versions.append(int(info.registered_model_version))
    assert versions == [1, 2]
    assert registry.tag_versions(mlflow_params, run_id, {"fid": "12.3456"}) == 1
    version = client.get_model_version(NAME, "2")
    assert (version.run_id, version.tags) == (run_id, {"fid": "12.3456"})
    signature = mlflow.models.get_model_info(f"models:/{NAME}/2").signature
    assert signature.inputs.inputs[0].shape == (-1, tiny_params().model.z_dim)
    assert signature.outputs.inputs[0].shape == (-1, 3, SIZE, SIZE)

    from_file = _sample(params_file, "file.png", "--generator", str(generator_file))
    assert _sample(params_file, "registry.png", "--model-uri", f"models:/{NAME}/2") == from_file
    assert _sample(params_file, "run.png", "--model-uri", f"runs:/{run_id}/{registry.ARTIFACT}") == from_file


def test_every_model_variant_exports(store, tmp_path):
    """The improved profile's model (BigGAN-style attention, no batch norm in D) and no attention."""
    _, mlflow_params, client = store
    base = tiny_params().model
    for model in (dataclasses.replace(base, attention_style="biggan", d_batchnorm=False),
                  dataclasses.replace(base, attention=False, g_batchnorm=False)):
        generator_file = _generator_file(tmp_path / "g.pt", model)
        info = registry.log_generator(dataclasses.replace(mlflow_params, registered_model=""), _new_run(client),
                                      generator_file)
        assert info.registered_model_version is None  # empty name: logged, not registered
        module, z_dim = registry.load_model(mlflow_params, info.model_uri)
        assert z_dim == model.z_dim and module(torch.zeros(2, z_dim)).shape == (2, 3, SIZE, SIZE)


def test_a_pickled_model_in_the_store_is_refused_without_running_it(store, tmp_path, monkeypatch, capsys):
    params_file, mlflow_params, client = store
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    marker = tmp_path / "payload-ran"
    planted = torch.nn.Linear(2, 2)
    planted.payload = PicklePayload(marker)  # pickled with the module
    mlflow.set_tracking_uri(mlflow_params.tracking_uri)
    info = mlflow.pytorch.log_model(planted, name="planted", run_id=_new_run(client), serialization_format="pickle",
                                    pip_requirements=["torch"])
    assert not marker.exists()
    capsys.readouterr()
    assert cli.main(["sample", "--params", str(params_file), "--model-uri", info.model_uri, "--out", "x.png"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sagan sample: error: --model-uri {info.model_uri}: cannot load it from sqlite:///")
    assert err.count("\n") == 1 and not marker.exists() and not Path("x.png").exists()
