"""`sagan evaluate`: FID, KID, precision/recall and SWD of a run's generator (the pipeline's or a cell's)."""
from __future__ import annotations

import argparse

from sagan import paths
from sagan.commands import add_cell_arguments
from sagan.errors import SaganError
from sagan.params import Params

HELP = f"FID, KID, precision/recall and SWD of {paths.RUN.generator}"
# It also reads fid.batch_size and fid.device (speed, not results), data.verify_shards (speed) and
# mlflow (where the numbers are logged, not what they are), so those are left out.
PARAM_KEYS = ("fid.weights", "fid.reference_split", "fid.reference_max_images", "fid.num_samples", "fid.seed",
              "fid.kid", "fid.kid_subset_size", "fid.swd_images", "evaluate.generator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cell_arguments(parser)


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.metrics.evaluate import evaluate, generator_file, log_to_training_run, published_pair
    from sagan.metrics.results import Evaluation
    from sagan.study.design import resolve_cell

    cell = resolve_cell(params, args.study, args.cell)
    params, outputs = (cell.params, cell.outputs) if cell else (params, paths.RUN)
    which = params.evaluate.generator
    generator = generator_file(outputs, which)
    pair = published_pair(generator, outputs.run_record)
    evaluation = Evaluation.from_dict({**evaluate(params, generator), "generator": which, "run_id": pair[1]})
    now = published_pair(generator, outputs.run_record)
    if now != pair:
        changed = " and ".join(str(path) for path, before, after in zip((generator, outputs.run_record), pair, now)
                               if before != after)
        raise SaganError(f"{changed} changed while evaluate ran (a `sagan train` published a run meanwhile); no "
                         f"metrics were written, as they would be attributed to another run than the one they measure",
                         hint="rerun `sagan evaluate` once training has finished")
    evaluation.write(outputs)
    log_to_training_run(params, evaluation, outputs.run_record)
    numbers = evaluation.numbers
    kid = f", KID {numbers['kid_mean']:.5f} ± {numbers['kid_std']:.5f}" if "kid_mean" in numbers else ""
    print(f"sagan evaluate: FID {numbers['fid']:.3f}{kid} ({numbers['n_gen']} samples vs {numbers['n_ref']} "
          f"{evaluation.reference_split} images, {evaluation.weights_kind} weights, {which} generator) -> "
          f"{outputs.metrics}, {outputs.metrics_protocol.name}")
