"""`sagan evaluate`: FID, KID, precision/recall and SWD of models/generator.pt against the
reference (data/fid/reference.npz and its images), beside the floor and ceiling of
data/fid/bounds.json.

`fid.num_samples` images are drawn in batches of `fid.batch_size` from latents of a numpy
Generator seeded with `fid.seed` (drawn on the CPU in sequence, so the images are the same for
any batch size or device), converted to uint8 exactly as the training data is stored, and
measured by sagan.metrics.measure (the protocol the floor and ceiling share); sample sizes, and that
data/fid/bounds.json was measured against this reference with these sampling params, are checked
before any image is drawn.

The numbers go to reports/metrics.json, their protocol and the MLflow run id of the training run
they belong to (`run_id`, from reports/train/run.json) to reports/metrics_protocol.json
(sagan.metrics.results.Evaluation), and the numbers into that MLflow run. Without run.json `run_id` is
null and a warning says the metrics were not logged: evaluating a foreign generator still works.

The generator and run.json are one pair: a `sagan train` may publish a new pair while an evaluation
runs (it takes no lock, so that it never stops a training run from starting). The pair is read
before the generator is loaded and again after scoring, and an evaluation whose pair changed is
refused rather than written under the other run's id. (Train renames run.json microseconds after
the generator; an evaluation lasts seconds at least, so it cannot fall between the two.)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from sagan import paths, tracking
from sagan.digest import file_digest
from sagan.errors import SaganError
from sagan.device import resolve_device
from sagan.metrics import bounds, measure
from sagan.metrics.extractor import EXTRACTOR_LABEL, RESIZE_LABEL
from sagan.metrics.reference import read_reference
from sagan.metrics.results import Evaluation, leaves
from sagan.model import registry
from sagan.model.io import load_generator
from sagan.params import Params
from sagan.run_record import RunRecord


def evaluate(params: Params, generator_path: Path) -> dict:
    """The generator in `generator_path` measured against the reference: an Evaluation's numbers
    and protocol fields, but `generator` and `run_id` (which the command knows)."""
    started = time.perf_counter()
    fid = params.fid
    reference = read_reference()
    measure.check_sample_sizes(fid, reference)
    generator, config = load_generator(generator_path, resolve_device(fid.device, param="fid.device"))
    extractor, weights = measure.matching_extractor(fid, reference, int(config["image_size"]), str(generator_path))
    floor_and_ceiling = bounds.read_bounds(reference, params)  # before the 50,000 images, not after
    batches = measure.generated_batches(generator, int(config["z_dim"]), fid.num_samples, fid.batch_size, fid.seed)
    scores = measure.score(batches, fid.num_samples, extractor, reference, measure.reference_images(fid, params.data.verify_shards), fid,
                           desc="evaluate")
    return {
        **scores, **floor_and_ceiling,
        "reference_split": str(reference["reference_split"]),
        "extractor": EXTRACTOR_LABEL, "weights_sha256": weights.sha256, "weights_kind": weights.kind,
        "preprocessing": {"crop": int(reference["crop"]), "size": int(reference["size"]),
                          "resize_to_inception": RESIZE_LABEL},
        "metric_protocols": measure.PROTOCOL,
        "synthetic_data": bool(reference["synthetic_data"]),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }


def log_to_training_run(params: Params, evaluation: Evaluation, record_path: Path) -> None:
    """Add the numbers and the protocol tags to the MLflow run of the training that `record_path`
    (its run.json) names; warn, never fail."""
    if not record_path.is_file():
        print(f"sagan evaluate: warning: {record_path} not found; metrics not logged to MLflow",
              file=sys.stderr)
        return
    # Every score, and its floor and ceiling as `floor/fid`, ...; sample counts go to the tags.
    values = {key.replace(".", "/"): value for key, value in leaves(evaluation.numbers)
              if not key.rpartition(".")[2].startswith("n_") and key != "wall_time_s"}
    numbers = evaluation.numbers
    tags = {"sagan.fid_weights_kind": evaluation.weights_kind, "sagan.fid_weights_sha256": evaluation.weights_sha256,
            "sagan.fid_extractor": evaluation.extractor, "sagan.fid_reference_split": evaluation.reference_split,
            "sagan.fid_n_gen": str(numbers["n_gen"]), "sagan.fid_n_ref": str(numbers["n_ref"]),
            "sagan.synthetic_data": str(evaluation.synthetic_data).lower()}
    try:
        training_run = tracking.MlflowRun.from_run_record(params.mlflow, RunRecord.read(record_path), record_path)
    except SaganError as exc:
        print(f"sagan evaluate: warning: metrics not logged to MLflow: {exc}", file=sys.stderr)
        return
    if training_run.run_id != evaluation.run_id:  # run.json replaced since the command checked it
        print(f"sagan evaluate: warning: metrics not logged to MLflow: {record_path} names run {training_run.run_id}, "
              f"the metrics belong to {evaluation.run_id}", file=sys.stderr)
        return
    training_run.log_evaluation(values, paths.FID_REFERENCE, evaluation)
    training_run.set_tags(tags)
    registry.tag_versions(params.mlflow, training_run.run_id, {"fid": f"{numbers['fid']:.4f}"})


def training_run_id(record_path: Path) -> str | None:
    """The MLflow run id in `record_path` (the run.json of the run that wrote the generator), or
    None when there is no readable record (log_to_training_run warns about that)."""
    if not record_path.is_file():
        return None
    try:
        return RunRecord.read(record_path).mlflow_run_id
    except SaganError:
        return None


def generator_file(outputs: paths.RunOutputs, which: str) -> Path:
    """The file `evaluate.generator` (last | best) names among a run's outputs."""
    return {"last": outputs.generator, "best": outputs.generator_best}[which]


def published_pair(generator: Path, record: Path) -> tuple[str | None, str | None]:
    """(sha256 of the generator file, the run id of run.json) as they are now; None for a missing or
    unreadable one (evaluate names a missing generator when it loads it). The generator's content,
    not only the run id: a run continued to more steps keeps its MLflow run."""
    return file_digest(generator) if generator.is_file() else None, training_run_id(record)
