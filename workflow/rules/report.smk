rule report:
    input:
        rules.evaluate.output,
        rules.train.output.losses,
        rules.train.output.evals,
        rules.train.output.samples,
        rules.train.output.run_record,
        stages.code_deps("report"),
    output:
        markdown=paths.REPORT_MD,
        html=paths.REPORT_HTML,
        figures=directory(paths.FIGURES_DIR),
    params:
        **stage_params("report"),
    log:
        "logs/report.log",
    shell:
        sagan_command("report")
