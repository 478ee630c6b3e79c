"""`sagan fid-bounds`: the floor and the ceiling of every metric, measured with evaluate's protocol
(sagan.metrics.measure) -> data/fid/bounds.json. They give the trained generator's numbers a scale.

- floor: `fid.num_samples` real training images (the first ones of the train split; all of it if
  it is smaller) against the reference. What a generator that reproduced the training data would
  score at this sample size: FID is biased upwards at small n, so the floor is not 0.
- ceiling: the untrained generator (the model params, initialised from `train.seed` exactly as
  training initialises it) on evaluate's latents. What no training scores.

The file depends on the data, the reference and BOUNDS_KEYS only, so changing how the generator
trains never recomputes it; evaluate copies both rows into reports/metrics.json. It records what
its rows were measured with: the reference's sha256 (which stands for the data, the Inception
weights and the reference keys) and the sampling keys, which evaluate checks before it draws a
sample (`read_bounds`). The model keys and train.seed are not checked: a study's cells train other
models against this one scale (sagan.study.design).
"""
from __future__ import annotations

import torch

from sagan import paths
from sagan.data.loader import dataset_info, load_split
from sagan.device import resolve_device
from sagan.metrics import measure, reference
from sagan.metrics.extractor import image_batches
from sagan.model.networks import Generator
from sagan.params import Params, flatten

# What the bounds depend on besides the data and the reference; `sagan fid-bounds` declares exactly these.
BOUNDS_KEYS = ("fid.weights", "fid.reference_split", "fid.reference_max_images", "fid.num_samples", "fid.seed",
              "fid.kid", "fid.kid_subset_size", "fid.swd_images", "model", "train.seed")
ROWS = ("floor", "ceiling")
# The keys of evaluate's protocol that the rows depend on, beside the reference (its digest covers its keys).
SAMPLING_KEYS = tuple(key for key in BOUNDS_KEYS if key.startswith("fid.") and key not in reference.REFERENCE_KEYS)


def untrained_generator(params: Params, image_size: int) -> Generator:
    """The generator as `sagan train` builds it before its first step (sagan.train.step)."""
    torch.manual_seed(params.train.seed)
    return Generator(params.model, image_size).eval()


def compute(params: Params) -> dict:
    """bounds.json's content for the prepared data and reference in the working directory."""
    fid = params.fid
    ref = reference.read_reference()
    measure.check_sample_sizes(fid, ref)
    size = dataset_info().size
    extractor, _ = measure.matching_extractor(fid, ref, size, "the prepared data")
    real = measure.reference_images(fid, params.data.verify_shards)
    training_images = load_split("train", max_images=fid.num_samples, verify=params.data.verify_shards)
    floor = measure.score(image_batches(training_images, fid.batch_size), len(training_images), extractor,
                          ref, real, fid, desc="floor (training images)")
    generator = untrained_generator(params, size).to(resolve_device(fid.device, param="fid.device"))
    ceiling = measure.score(measure.generated_batches(generator, params.model.z_dim, fid.num_samples, fid.batch_size, fid.seed),
                            fid.num_samples, extractor, ref, real, fid, desc="ceiling (untrained generator)")
    return {"floor": floor, "ceiling": ceiling, "reference_sha256": ref["sha256"], "params": sampling_params(params)}


def sampling_params(params: Params) -> dict:
    """The SAMPLING_KEYS of `params` and their values."""
    flat = flatten(params)
    return {key: flat[key] for key in SAMPLING_KEYS}


def read_bounds(ref: dict, params: Params) -> dict:
    """The floor and ceiling rows of data/fid/bounds.json, measured against `ref` (read_reference's)
    with the sampling keys of `params`; else one line naming the file. Cheap, so evaluate calls it
    before drawing any sample."""
    data = paths.read_json_object(paths.FID_BOUNDS)
    if any(not isinstance(data.get(row), dict) for row in ROWS):
        raise paths.bad_input(paths.FID_BOUNDS, f"lacks the {' and '.join(ROWS)} rows")
    if data.get("reference_sha256") != ref["sha256"]:
        raise paths.bad_input(paths.FID_BOUNDS, f"was measured against another FID reference (sha256 "
                                                f"{data.get('reference_sha256')}) than {paths.FID_REFERENCE} "
                                                f"(sha256 {ref['sha256']})")
    recorded = data.get("params") if isinstance(data.get("params"), dict) else {}
    now = sampling_params(params)
    differ = [key for key in SAMPLING_KEYS if recorded.get(key) != now[key]]
    if differ:
        raise paths.bad_input(paths.FID_BOUNDS, f"was measured with {', '.join(f'{k} {recorded.get(k)}' for k in differ)}; "
                                                f"the params give {', '.join(f'{k} {now[k]}' for k in differ)}")
    return {row: data[row] for row in ROWS}
