"""`sagan train`: the SAGAN training stage.

Modules: `loop` (the stage: epochs, logging, checkpoints, outputs), `step` (one GAN step: D and G
updates, precision, EMA), `checkpoint` (atomic save, newest-valid load, pruning, RNG states, the
superseded sets of other params' checkpoints), `dist` (torchrun/DDP context), `lock` (one `sagan
train` per project at a time), `records` (losses.csv, evals.csv).
"""
