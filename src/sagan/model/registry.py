"""The generator as an MLflow model: logged to its training run, registered in the Model Registry
under `mlflow.registered_model`, and loaded back by `sagan sample --model-uri`.

The format is mlflow.pytorch's `pt2` (a torch.export program of the generator in eval mode), not
`pickle`. MLflow (3.17) loads a pt2 model only after checking that each of its records is plain
metadata or loads with torch's weights_only unpickler, and refuses pickled models unless
MLFLOW_ALLOW_PICKLE_DESERIALIZATION is set: loading one of ours never runs code from the store.
The logged program is built from models/generator.pt as published (loaded weights_only), so the
registry holds exactly what DVC caches.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sagan import tracking
from sagan.errors import SaganError, first_line
from sagan.model.io import load_generator
from sagan.params import MlflowParams

ARTIFACT = "generator"  # the model's name in its run: runs:/<run_id>/generator
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
    `runs:/<run_id>/<name>` is resolved here to the run's logged model of that name."""
    if not model_uri.startswith("runs:/"):
        return model_uri
    run_id, _, name = model_uri.removeprefix("runs:/").partition("/")
    for output in mlflow_client.get_run(run_id).outputs.model_outputs:
        if mlflow_client.get_logged_model(output.model_id).name == name:
            return f"models:/{output.model_id}"
    return model_uri  # not a logged model: perhaps a model directory among the run's artifacts


def load_model(mlflow_params: MlflowParams, model_uri: str) -> tuple[torch.nn.Module, int]:
    """The generator at `model_uri` (models:/<name>/<version>, runs:/<run_id>/generator,
    models:/<model_id>) on the CPU, and its latent size from the signature; or one line naming
    the URI."""
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    mlflow_client = tracking.client(mlflow_params)
    _use_store(mlflow_params)
    try:
        resolved = _logged_model_uri(mlflow_client, model_uri)
        inputs = get_model_info(resolved).signature.inputs.inputs
        module = mlflow.pytorch.load_model(resolved)  # a pt2 program loads on the CPU it was exported on
    except (MlflowException, OSError, AttributeError) as exc:
        raise SaganError(f"--model-uri {model_uri}: cannot load it from {tracking.tracking_uri(mlflow_params)} "
                         f"({first_line(exc)[:200]})",
                         hint="list the versions with the MLflow UI (`make ui`), or use runs:/<run_id>/generator") from exc
    return module, int(inputs[0].shape[1])
