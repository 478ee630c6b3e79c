rule report:
    input:
        "reports/metrics.json",
        "reports/train/losses.csv",
        "reports/train/samples",
        "reports/train/run.json",
        sources("src/sagan/report", "src/sagan/tracking.py"),
    output:
        "reports/report.md",
        "reports/report.html",
        directory("reports/figures"),
    params:
        **param_keys("report", "mlflow"),
    log:
        "logs/report.log",
    shell:
        "sagan report --params params.yaml 2>&1 | tee {log}"
