"""The generator as an MLflow model: logged to its run, one registered version per run, tagged
with its FID, loaded back by `sagan sample --model-uri` with the same pixels as the file; any
other model in the store is refused by every route before anything in it runs."""
from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.models import infer_signature
from PIL import Image

from helpers import PicklePayload, tiny_params, write_params
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


def _model_dir(client, model_id: str) -> Path:
    """The directory of a logged model's files in the test's local artifact store."""
    return Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))


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
    assert _sample(params_file, "dir.png", "--model-uri", str(_model_dir(client, info.model_id))) == from_file


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


PLANTED_MODULE = "planted_pickle_module"


def _plant(client, mlflow_params, tmp_path: Path, marker: Path, payload: str) -> tuple[str, str, Path]:
    """Log a model that runs code when MLflow loads it (creating `marker`) to a new run, as `planted`,
    registered as version 1 of NAME, with a signature (z of size 2): (run_id, model_id, its artifact
    directory). payload "pickle": the pickled module carries a PicklePayload; "code": the model ships
    a code directory whose module, named as the pickle module, creates the marker when imported."""
    planted = torch.nn.Linear(2, 2)
    code_paths = None
    if payload == "pickle":
        planted.payload = PicklePayload(marker)  # pickled with the module
    else:
        module = tmp_path / f"{PLANTED_MODULE}.py"
        module.write_text(f"open({str(marker)!r}, 'w')\n")
        code_paths = [str(module)]
    mlflow.set_tracking_uri(mlflow_params.tracking_uri)
    run_id = _new_run(client)
    example = np.zeros((1, 2), np.float32)
    info = mlflow.pytorch.log_model(planted, name="planted", run_id=run_id, serialization_format="pickle",
                                    signature=infer_signature(example, example), code_paths=code_paths,
                                    registered_model_name=NAME, pip_requirements=["torch"])
    directory = _model_dir(client, info.model_id)
    if payload == "code":  # MLflow imports the named pickle module before it checks anything
        (directory / "data" / "pickle_module_info.txt").write_text(PLANTED_MODULE)
    assert not marker.exists()
    return run_id, info.model_id, directory


@pytest.mark.parametrize("payload,allow_pickle,reason", [
    ("pickle", None, "data/ holds model.pth, pickle_module_info.txt, not model.pt2 alone"),
    ("code", "false", "it ships code to import: the `code` entry of python_function, pytorch")])
def test_a_model_that_runs_code_is_refused_by_every_route_without_running_it(
        store, tmp_path, monkeypatch, capsys, payload, allow_pickle, reason):
    """MLFLOW_ALLOW_PICKLE_DESERIALIZATION defaults to true in MLflow 3.17, and a model's own code
    directory is imported even when it is false: whatever it says, only a pt2 export is loaded."""
    params_file, mlflow_params, client = store
    if allow_pickle is None:
        monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", allow_pickle)
    marker = tmp_path / "payload-ran"
    run_id, model_id, directory = _plant(client, mlflow_params, tmp_path, marker, payload)
    capsys.readouterr()
    for uri in (str(directory), f"models:/{NAME}/1", f"models:/{NAME}/latest", f"runs:/{run_id}/planted",
                f"models:/{model_id}"):
        code = cli.main(["sample", "--params", str(params_file), "--model-uri", uri, "--out", "x.png"])
        err = capsys.readouterr().err
        assert not marker.exists() and code == 1, uri
        assert err.startswith(f"sagan sample: error: --model-uri {uri}: refused, not a pt2 export as "
                              f"`sagan train` logs it ({reason}) (hint: "), err
        assert err.count("\n") == 1 and not Path("x.png").exists()


def _replace_record(archive: Path, suffix: str, content: bytes) -> None:
    """Rewrite the zip `archive` with `content` as its record whose name ends with `suffix`."""
    with zipfile.ZipFile(archive) as original:
        records = {info.filename: original.read(info) for info in original.infolist()}
    records[next(name for name in records if name.endswith(suffix))] = content
    with zipfile.ZipFile(archive, "w") as rewritten:
        for name, record in records.items():
            rewritten.writestr(name, record)


def test_a_pt2_export_with_a_pickle_payload_is_refused_even_where_mlflow_allows_pickle(
        store, tmp_path, monkeypatch, capsys):
    """torch.export.load unpickles sample inputs that weights_only refuses with weights_only=False;
    MLflow checks the archive only while MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false, sagan always."""
    params_file, mlflow_params, client = store
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    marker = tmp_path / "payload-ran"
    info = registry.log_generator(mlflow_params, _new_run(client),
                                  _generator_file(tmp_path / "generator.pt", tiny_params().model))
    directory = _model_dir(client, info.model_id)
    payload = io.BytesIO()
    torch.save(PicklePayload(marker), payload)
    _replace_record(directory / "data" / "model.pt2", "data/sample_inputs/model.pt", payload.getvalue())
    assert not marker.exists()
    capsys.readouterr()
    code = cli.main(["sample", "--params", str(params_file), "--model-uri", f"models:/{NAME}/1", "--out", "x.png"])
    err = capsys.readouterr().err
    assert not marker.exists() and code == 1
    assert err.startswith(f"sagan sample: error: --model-uri models:/{NAME}/1: refused, not a pt2 export as "
                          f"`sagan train` logs it (Deserializing model using pickle is disallowed, but record "
                          f"'model/data/sample_inputs/model.pt' in the model's 'pt2' archive is not a pickle-free "
                          f"payload."), err
    assert err.count("\n") == 1 and not Path("x.png").exists()


def test_a_run_without_the_named_logged_model_is_one_plain_line(store, capsys):
    params_file, _, client = store
    run_id = _new_run(client)
    uri = f"runs:/{run_id}/{registry.ARTIFACT}"
    assert cli.main(["sample", "--params", str(params_file), "--model-uri", uri, "--out", "x.png"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sagan sample: error: --model-uri {uri}: run {run_id} has no logged model named "
                          f"'generator' (hint: ")
    assert err.count("\n") == 1 and not Path("x.png").exists()
