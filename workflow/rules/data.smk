rule download:
    input:
        stages.code_deps("download"),
    output:
        zip=paths.RAW_ZIP,
        partition=paths.RAW_PARTITION,
    params:
        **stage_params("download"),
    log:
        "logs/download.log",
    shell:
        sagan_command("download")


rule prepare:
    input:
        rules.download.output,
        stages.code_deps("prepare"),
    output:
        directory(paths.PREPARED_DIR),
    params:
        **stage_params("prepare"),
    threads: all_cores
    log:
        "logs/prepare.log",
    shell:
        sagan_command("prepare")


rule split:
    input:
        rules.prepare.output,
        stages.code_deps("split"),
    output:
        paths.SPLIT_FILE,
    params:
        **stage_params("split"),
    log:
        "logs/split.log",
    shell:
        sagan_command("split")
