"""`sagan train`: the SAGAN training stage.

Modules: `loop` (the stage: epochs, logging, checkpoints, resume), `state` (the loop state that a
checkpoint holds), `step` (one GAN step: D and G updates, precision, EMA), `publish` (rank 0's MLflow
run and published outputs), `evaluation` (FID and the other metrics during training), `checkpoint`
(atomic save, newest-valid load, pruning, RNG states, the superseded sets of other params'
checkpoints), `dist` (torchrun/DDP context), `lock` (one `sagan train` per project at a time),
`records` (losses.csv, evals.csv).
"""
