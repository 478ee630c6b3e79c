rule download:
    input:
        sources("src/sagan/data/download.py", "src/sagan/data/formats.py", "src/sagan/data/synthetic.py"),
    output:
        "data/raw/img_align_celeba.zip",
        "data/raw/list_eval_partition.txt",
    params:
        **param_keys("data"),
    log:
        "logs/download.log",
    shell:
        "sagan download --params params.yaml 2>&1 | tee {log}"


rule prepare:
    input:
        "data/raw/img_align_celeba.zip",
        "data/raw/list_eval_partition.txt",
        sources("src/sagan/data/formats.py", "src/sagan/data/prepare.py", "src/sagan/data/synthetic.py"),
    output:
        directory("data/prepared"),
    params:
        **param_keys("prepare"),
    threads: all_cores
    log:
        "logs/prepare.log",
    shell:
        "sagan prepare --params params.yaml 2>&1 | tee {log}"


rule split:
    input:
        "data/prepared",
        sources("src/sagan/data/formats.py", "src/sagan/data/split.py"),
    output:
        "data/split/split.parquet",
    params:
        **param_keys("split"),
    log:
        "logs/split.log",
    shell:
        "sagan split --params params.yaml 2>&1 | tee {log}"
