"""The generator as an MLflow model: logged to its training run, registered in the Model Registry
under `mlflow.registered_model`, and loaded back by `sagan sample --model-uri`.

The format is mlflow.pytorch's `pt2` (a torch.export program of the generator in eval mode), not
`pickle`. Loading a model from a store trusts nothing but such an export, and never calls
mlflow.pytorch's loader: that unpickles models (MLFLOW_ALLOW_PICKLE_DESERIALIZATION defaults to
true in MLflow 3.17) and imports a model's `code` directory and pickle module whatever that
variable says. Instead the model's files are copied into a temporary directory, and refused
unread unless its MLmodel has a pytorch flavour whose data is `data/model.pt2` alone (no pickled
weights, no pickle module, no `code` entry in any flavour); that archive must then pass MLflow's
pickle-free check (every record plain metadata or loadable by torch's weights_only unpickler),
always applied, before torch.export.load reads the same checked copy. The logged program is built
from models/generator.pt as published (loaded weights_only), so the registry holds exactly what
DVC caches.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import yaml

from sagan import tracking
from sagan.errors import SaganError, one_line
from sagan.model.io import load_generator
from sagan.params import MlflowParams

ARTIFACT = "generator"  # the model's name in its run: runs:/<run_id>/generator
PT2_FILE = "model.pt2"  # mlflow.pytorch's pt2 export, alone in the flavour's `data` directory
EXAMPLE_SEED = 0


def _signature(z_dim: int, image_size: int):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, z_dim), "z")]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, image_size, image_size), "image")]))


def _use_store(mlflow_params: MlflowParams) -> None:
    """mlflow.pytorch's log and load functions take no store argument: they use the process-wide
    tracking (and registry) URI, so it is set here, to the stage's store."""
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri(mlflow_params))


def log_generator(mlflow_params: MlflowParams, run_id: str, generator_path: Path, step: int = 0):
    """Log the generator file as an MLflow model of run `run_id` at training step `step` (with a
    signature: latent z in, image in [-1, 1] out, and an input example), and register it as a new
    version of `mlflow.registered_model` unless that is empty. Returns mlflow's ModelInfo."""
    import mlflow.pytorch

    generator, config = load_generator(generator_path)
    z_dim, size = int(config["z_dim"]), int(config["image_size"])
    example = np.random.default_rng(EXAMPLE_SEED).standard_normal((2, z_dim), dtype=np.float32)
    _use_store(mlflow_params)
    # The logged model belongs to the run's experiment (MLflow takes the process-wide one, Default,
    # otherwise), or the UI's Models column of the run stays empty.
    mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(run_id).info.experiment_id)
    return mlflow.pytorch.log_model(
        generator, name=ARTIFACT, run_id=run_id, step=step, signature=_signature(z_dim, size), input_example=example,
        serialization_format="pt2", registered_model_name=mlflow_params.registered_model or None,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],  # stated: no import-scanning subprocess
        # MLflow's serving check sends the example as a JSON list, which the PyTorch flavor refuses
        # whatever the model; the signature and the example are still logged.
        validate_serving_input=False)


def tag_versions(mlflow_params: MlflowParams, run_id: str, tags: dict[str, str]) -> int:
    """Tag the registered versions of run `run_id` (one per run) with `tags` (evaluate adds the
    FID). Returns how many versions were tagged: 0 when nothing is registered."""
    if not mlflow_params.registered_model:
        return 0
    mlflow_client = tracking.client(mlflow_params)
    versions = mlflow_client.search_model_versions(
        f"name='{mlflow_params.registered_model}' and run_id='{run_id}'")
    for version in versions:
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(version.name, version.version, key, value)
    return len(versions)


def _logged_model_uri(mlflow_client, model_uri: str) -> str:
    """MLflow 3 keeps a logged model apart from its run's artifacts, as `models:/<model_id>`;
    `runs:/<run_id>/<name>` is resolved here to the run's logged model of that name, or is one
    line saying the run has none (MLflow would say it failed to download 'MLmodel')."""
    if not model_uri.startswith("runs:/"):
        return model_uri
    run_id, _, name = model_uri.removeprefix("runs:/").partition("/")
    for output in mlflow_client.get_run(run_id).outputs.model_outputs:
        if mlflow_client.get_logged_model(output.model_id).name == name:
            return f"models:/{output.model_id}"
    raise SaganError(f"--model-uri {model_uri}: run {run_id} has no logged model named {name!r}",
                     hint=f"`sagan train` logs its generator as runs:/<run_id>/{ARTIFACT} "
                          f"(with `mlflow.log_model: true`)")


def _checked_export(model_dir: Path) -> tuple[Path, int]:
    """The pt2 file and latent size of the model copied to `model_dir` if it is a pt2 export as
    log_generator writes it, judged from its MLmodel and file names alone; else ValueError(why not)."""
    from mlflow.models import Model

    try:
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"no readable MLmodel: {one_line(exc, limit=100)}") from exc
    flavors = mlmodel.get("flavors") if isinstance(mlmodel, dict) else None
    if not isinstance(flavors, dict) or not isinstance(flavors.get("pytorch"), dict):
        raise ValueError("no pytorch flavour in its MLmodel")
    if shipped := sorted(name for name, flavor in flavors.items() if isinstance(flavor, dict) and flavor.get("code")):
        raise ValueError(f"it ships code to import: the `code` entry of {', '.join(shipped)}")
    if (data := flavors["pytorch"].get("model_data")) != "data":
        raise ValueError(f"its pytorch data is {data!r}, not 'data'")
    files = sorted(path.name for path in (model_dir / "data").iterdir()) if (model_dir / "data").is_dir() else []
    if files != [PT2_FILE]:
        raise ValueError(f"data/ holds {', '.join(files) or 'nothing'}, not {PT2_FILE} alone")
    signature = Model.from_dict(mlmodel).signature
    inputs = signature.inputs.inputs if signature else []
    if len(inputs) != 1 or len(getattr(inputs[0], "shape", ())) != 2:
        raise ValueError("its signature is not one latent input of shape (-1, z_dim)")
    return model_dir / "data" / PT2_FILE, int(inputs[0].shape[1])


def load_model(mlflow_params: MlflowParams, model_uri: str) -> tuple[torch.nn.Module, int]:
    """The generator at `model_uri` (models:/<name>/<version>, models:/<name>/latest,
    runs:/<run_id>/generator, models:/<model_id>, a model directory) on the CPU, and its latent
    size from the signature; or one line naming the URI. Nothing but a pt2 export is loaded."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.pytorch import _validate_pt2_archive_is_pickle_free  # pinned mlflow: its check, always on

    mlflow_client = tracking.client(mlflow_params)
    _use_store(mlflow_params)
    with tempfile.TemporaryDirectory(prefix="sagan-model-") as tmp:
        try:
            resolved = _logged_model_uri(mlflow_client, model_uri)
            # A copy, so that what is checked is what is loaded; no progress bar before a one-line error.
            with mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
                model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=resolved, dst_path=tmp))
        except (MlflowException, OSError) as exc:
            raise SaganError(f"--model-uri {model_uri}: cannot load it from {tracking.shown_uri(mlflow_params)} "
                             f"({one_line(exc)})",
                             hint="list the versions with the MLflow UI (`make ui`), "
                                  "or use runs:/<run_id>/generator") from exc
        try:
            pt2, z_dim = _checked_export(model_dir)
            _validate_pt2_archive_is_pickle_free(str(pt2))
            module = torch.export.load(pt2).module()  # a pt2 program loads on the CPU it was exported on
        except (ValueError, MlflowException, RuntimeError) as exc:  # RuntimeError: a damaged archive
            raise SaganError(f"--model-uri {model_uri}: refused, not a pt2 export as `sagan train` logs it "
                             f"({one_line(exc)})",
                             hint="only models that `sagan train` logs (`mlflow.log_model: true`) are loaded") from exc
    return module, z_dim
