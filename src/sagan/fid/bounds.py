"""`sagan fid-bounds`: the floor and the ceiling of every metric, measured with evaluate's protocol
(sagan.fid.measure) -> data/fid/bounds.json. They give the trained generator's numbers a scale.

- floor: `fid.num_samples` real training images (the first ones of the train split; all of it if
  it is smaller) against the reference. What a generator that reproduced the training data would
  score at this sample size: FID is biased upwards at small n, so the floor is not 0.
- ceiling: the untrained generator (the model params, initialised from `train.seed` exactly as
  training initialises it) on evaluate's latents. What no training scores.

The file depends on the data, the reference and PARAM_KEYS only, so changing how the generator
trains never recomputes it; evaluate copies both rows into reports/metrics.json.
"""
from __future__ import annotations

import argparse
import json

import torch

from sagan import paths
from sagan.atomic import write_json
from sagan.data.loader import configure, dataset_info, load_split
from sagan.device import resolve_device
from sagan.fid import measure
from sagan.fid.extractor import image_batches
from sagan.fid.reference import read_reference
from sagan.model.networks import Generator
from sagan.params import Params

# The params this stage reads; dvc.yaml and its Snakemake rule declare exactly these (sagan.stages).
PARAM_KEYS = ("fid.weights", "fid.reference_split", "fid.reference_max_images", "fid.num_samples", "fid.seed",
              "fid.kid", "fid.kid_subset_size", "fid.swd_images", "model", "train.seed")
ROWS = ("floor", "ceiling")


def untrained_generator(params: Params, image_size: int) -> Generator:
    """The generator as `sagan train` builds it before its first step (sagan.train.step)."""
    torch.manual_seed(params.train.seed)
    return Generator(params.model, image_size).eval()


def compute(params: Params) -> dict:
    """bounds.json's content for the prepared data and reference in the working directory."""
    fid = params.fid
    reference = read_reference()
    measure.check_sample_sizes(fid, reference)
    size = dataset_info().size
    extractor, _ = measure.matching_extractor(fid, reference, size, "the prepared data")
    real = measure.reference_images(fid)
    training_images = load_split("train", max_images=fid.num_samples)
    floor = measure.score(image_batches(training_images, fid.batch_size), len(training_images), extractor,
                          reference, real, fid, desc="floor (training images)")
    generator = untrained_generator(params, size).to(resolve_device(fid.device, param="fid.device"))
    ceiling = measure.score(measure.generated_batches(generator, params.model.z_dim, fid.num_samples, fid.batch_size, fid.seed),
                            fid.num_samples, extractor, reference, real, fid, desc="ceiling (untrained generator)")
    return {"floor": floor, "ceiling": ceiling, "weights_sha256": str(reference["weights_sha256"])}


def read(expected_weights_sha256: str, num_samples: int) -> dict:
    """The floor and ceiling rows of data/fid/bounds.json; one line naming the file when it is
    missing, unreadable, or measured with other Inception weights or sample count than now."""
    try:
        data = json.loads(paths.require(paths.FID_BOUNDS).read_text())
    except json.JSONDecodeError as exc:
        raise paths.bad_input(paths.FID_BOUNDS, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or any(not isinstance(data.get(row), dict) for row in ROWS):
        raise paths.bad_input(paths.FID_BOUNDS, f"lacks the {' and '.join(ROWS)} rows")
    if data.get("weights_sha256") != expected_weights_sha256:
        raise paths.bad_input(paths.FID_BOUNDS, f"was measured with Inception weights sha256 "
                                                f"{data.get('weights_sha256')}, the reference with {expected_weights_sha256}")
    if data["ceiling"].get("n_gen") != num_samples:
        raise paths.bad_input(paths.FID_BOUNDS, f"was measured on {data['ceiling'].get('n_gen')} samples, "
                                                f"fid.num_samples is {num_samples}")
    return {row: data[row] for row in ROWS}


def run(params: Params, args: argparse.Namespace) -> None:
    configure(verify_shards=params.data.verify_shards)
    bounds = compute(params)
    write_json(paths.FID_BOUNDS, bounds)
    floor, ceiling = bounds["floor"], bounds["ceiling"]
    print(f"sagan fid-bounds: FID floor {floor['fid']:.3f} ({floor['n_gen']} training images), ceiling "
          f"{ceiling['fid']:.3f} (untrained generator); SWD floor {floor['swd']:.1f}, ceiling {ceiling['swd']:.1f} "
          f"-> {paths.FID_BOUNDS}")
