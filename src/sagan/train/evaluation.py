"""Evaluations during training (`train.eval_every`): FID, KID, precision/recall and SWD of the
sampling generator on `train.eval_samples` images against the cached reference, with evaluate's
protocol (sagan.metrics.measure) at that sample size.

They never change training: the generator is switched to eval mode for the pass and back (batch
norm statistics and spectral-norm vectors stay as they were), latents come from a numpy Generator
seeded with `train.seed` (no torch RNG stream moves), and everything runs under no_grad. So a run
with evaluations gives bitwise the same weights as one without (tests/test_train.py).
"""
from __future__ import annotations

import dataclasses

import torch

from sagan.errors import SaganError
from sagan.metrics import measure
from sagan.metrics.reference import read_reference
from sagan.params import FidParams, Params


class TrainingEvaluator:
    """Loads the reference, its images and the extractor once; scores a generator per call."""

    def __init__(self, params: Params, image_size: int):
        n = params.train.eval_samples
        self.reference = read_reference()
        self.extractor, _ = measure.matching_extractor(params.fid, self.reference, image_size, "training")
        # Evaluate's protocol at this sample size, but for the sampling keys, which are evaluate's
        # (a new fid.seed must not retrain): latents seeded by train.seed, KID always on, with the
        # paper's subset size (capped at n), SWD on all n images.
        self.fid = dataclasses.replace(params.fid, seed=params.train.seed, kid=True, num_samples=n, swd_images=n,
                                       kid_subset_size=min(FidParams().kid_subset_size, n))
        self.real = measure.reference_images(self.fid, params.data.verify_shards)
        if len(self.real) < 4:
            raise SaganError(f"train.eval_every: the reference has {len(self.real)} images; evaluations during "
                             f"training need at least 4", hint="set train.eval_every: 0")
        self.z_dim = params.model.z_dim

    @torch.no_grad()
    def __call__(self, generator: torch.nn.Module, step: int) -> dict:
        was_training = generator.training
        generator.eval()
        try:
            batches = measure.generated_batches(generator, self.z_dim, self.fid.num_samples, self.fid.batch_size,
                                                self.fid.seed)
            scores = measure.score(batches, self.fid.num_samples, self.extractor, self.reference, self.real, self.fid,
                                   desc=f"eval at step {step}")
        finally:
            generator.train(was_training)
        return {"step": step, **{k: v for k, v in scores.items() if v is not None}}
