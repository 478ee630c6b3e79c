rule fid_ref:
    input:
        "data/prepared",
        "data/split/split.parquet",
        sources("src/sagan/data/formats.py", "src/sagan/data/loader.py", "src/sagan/fid/extractor.py",
                "src/sagan/fid/reference.py", "src/sagan/fid/stats.py"),
    output:
        "data/fid/reference.npz",
    params:
        **param_keys("fid.weights", "fid.reference_split", "fid.reference_max_images"),
    threads: all_cores
    log:
        "logs/fid_ref.log",
    shell:
        "sagan fid-ref --params params.yaml 2>&1 | tee {log}"


rule evaluate:
    input:
        "models/generator.pt",
        "data/fid/reference.npz",
        # data/ modules come in through fid/reference.py (read_reference)
        sources("src/sagan/data/formats.py", "src/sagan/data/loader.py", "src/sagan/fid/evaluate.py",
                "src/sagan/fid/extractor.py", "src/sagan/fid/reference.py", "src/sagan/fid/stats.py",
                "src/sagan/model/attention.py", "src/sagan/model/io.py", "src/sagan/model/networks.py",
                "src/sagan/tracking.py"),
    output:
        "reports/metrics.json",
    params:
        **param_keys("fid.weights", "fid.num_samples", "fid.seed", "fid.kid", "fid.kid_subset_size"),
    threads: all_cores
    log:
        "logs/evaluate.log",
    shell:
        "sagan evaluate --params params.yaml 2>&1 | tee {log}"
