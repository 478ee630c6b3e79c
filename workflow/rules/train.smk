# models/checkpoints/ is deliberately no output, here as in dvc.yaml: Snakemake deletes a job's
# outputs before rerunning it, and the checkpoints must survive a kill so that the rerun resumes
# from them.
rule train:
    input:
        rules.prepare.output,
        rules.split.output,
        paths.FID_REFERENCE,  # the evaluations during training (train.eval_every); fid.smk comes later
        stages.code_deps("train"),
    output:
        generator=paths.GENERATOR,
        generator_best=paths.GENERATOR_BEST,
        evals=paths.EVALS_CSV,
        samples=directory(paths.SAMPLES_DIR),
        run_record=paths.RUN_RECORD,
        losses=paths.LOSSES_CSV,
    params:
        **stage_params("train"),
    threads: all_cores
    log:
        "logs/train.log",
    resources:
        gpus=1,
    shell:
        sagan_command("train")
