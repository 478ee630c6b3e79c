# models/checkpoints/ is deliberately no output, here as in dvc.yaml: Snakemake deletes a job's
# outputs before rerunning it (and after it fails), and the checkpoints must survive both so that
# the rerun resumes from them (workflow/profiles/README.md: "A failed job and its outputs").
TRAIN_RANKS = PARAMS["train"]["nproc_per_node"]  # `sagan train` starts them under torchrun itself


rule train:
    input:
        rules.prepare.output,
        rules.split.output,
        paths.FID_REFERENCE,  # the evaluations during training (train.eval_every); fid.smk comes later
        stages.code_deps("train"),
    output:
        generator=paths.RUN.generator,
        generator_best=paths.RUN.generator_best,
        evals=paths.RUN.evals_csv,
        samples=directory(paths.RUN.samples_dir),
        run_record=paths.RUN.run_record,
        losses=paths.RUN.losses_csv,
    params:
        **stage_params("train"),
    threads: all_cores
    log:
        "logs/train.log",
    resources:
        # One task, whose `sagan train` starts the ranks under torchrun (SLURM's own tasks would
        # each start all of them); one GPU per rank when the cluster profile names a GPU gres.
        **gpus(TRAIN_RANKS),
    shell:
        sagan_command("train")
