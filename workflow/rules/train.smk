# models/checkpoints/ is DVC's `persist: true` output. It is deliberately not a Snakemake output:
# Snakemake deletes a job's outputs before rerunning it, and the checkpoints must survive a kill
# so that the rerun resumes from them.
rule train:
    input:
        "data/prepared",
        "data/split/split.parquet",
        sources("src/sagan/data/formats.py", "src/sagan/data/loader.py", "src/sagan/model",
                "src/sagan/tracking.py", "src/sagan/train"),
    output:
        "models/generator.pt",
        directory("reports/train/samples"),
        "reports/train/run.json",
        "reports/train/losses.csv",
    params:
        **param_keys("model", "train", "mlflow"),
    threads: all_cores
    log:
        "logs/train.log",
    resources:
        gpus=1,
    shell:
        "sagan train --params params.yaml 2>&1 | tee {log}"
