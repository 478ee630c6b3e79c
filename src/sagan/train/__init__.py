"""`sagan train`: the SAGAN training stage.

Modules: `loop` (the stage: epochs, logging, checkpoints, outputs), `step` (one GAN step: D and G
updates, precision, EMA), `checkpoint` (atomic save, newest-valid load, pruning, RNG states),
`dist` (torchrun/DDP context), `records` (losses.csv, run.json, MLflow run).
"""
