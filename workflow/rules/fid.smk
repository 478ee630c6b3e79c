rule fid_ref:
    input:
        rules.prepare.output,
        rules.split.output,
        stages.code_deps("fid_ref"),
    output:
        paths.FID_REFERENCE,
    params:
        **stage_params("fid_ref"),
    threads: all_cores
    log:
        "logs/fid_ref.log",
    resources:
        **gpus(),  # Inception features (and generated images): a GPU where the profile names one
    shell:
        sagan_command("fid_ref")


rule fid_bounds:
    input:
        rules.prepare.output,
        rules.split.output,
        rules.fid_ref.output,
        stages.code_deps("fid_bounds"),
    output:
        paths.FID_BOUNDS,
    params:
        **stage_params("fid_bounds"),
    threads: all_cores
    log:
        "logs/fid_bounds.log",
    resources:
        **gpus(),  # Inception features (and generated images): a GPU where the profile names one
    shell:
        sagan_command("fid_bounds")


rule evaluate:
    input:
        rules.train.output.generator,
        rules.train.output.generator_best,  # evaluate.generator: best
        rules.train.output.run_record,  # metrics_protocol.json records which training run it measures
        rules.prepare.output,  # SWD compares with the reference images themselves
        rules.split.output,
        rules.fid_ref.output,
        rules.fid_bounds.output,
        stages.code_deps("evaluate"),
    output:
        metrics=paths.RUN.metrics,
        protocol=paths.RUN.metrics_protocol,
    params:
        **stage_params("evaluate"),
    threads: all_cores
    log:
        "logs/evaluate.log",
    resources:
        **gpus(),  # Inception features (and generated images): a GPU where the profile names one
    shell:
        sagan_command("evaluate")
