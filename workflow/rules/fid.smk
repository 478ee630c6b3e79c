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
    shell:
        sagan_command("fid_ref")


rule evaluate:
    input:
        rules.train.output.generator,
        rules.train.output.run_record,  # metrics.json records which training run it measures
        rules.fid_ref.output,
        stages.code_deps("evaluate"),
    output:
        metrics=paths.METRICS,
        protocol=paths.METRICS_PROTOCOL,
    params:
        **stage_params("evaluate"),
    threads: all_cores
    log:
        "logs/evaluate.log",
    shell:
        sagan_command("evaluate")
