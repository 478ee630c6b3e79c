rule fid_ref:
    input:
        "data/prepared",
        "data/split/split.parquet",
        sources("src/sagan/data/loader.py", "src/sagan/fid/extractor.py", "src/sagan/fid/stats.py",
                "src/sagan/fid/reference.py"),
    output:
        "data/fid/reference.npz",
    params:
        **param_keys("fid.weights", "fid.reference_split", "fid.reference_max_images"),
    log:
        "logs/fid_ref.log",
    shell:
        "sagan fid-ref --params params.yaml 2>&1 | tee {log}"


rule evaluate:
    input:
        "models/generator.pt",
        "data/fid/reference.npz",
        sources("src/sagan/fid/extractor.py", "src/sagan/fid/stats.py", "src/sagan/fid/evaluate.py",
                "src/sagan/model/io.py"),
    output:
        "reports/metrics.json",
    params:
        **param_keys("fid.weights", "fid.num_samples", "fid.seed", "fid.kid", "fid.kid_subset_size"),
    log:
        "logs/evaluate.log",
    shell:
        "sagan evaluate --params params.yaml 2>&1 | tee {log}"
