# Datasets that must be fetched once before any training job (CIFAR-10; digits ship with scikit-learn).
# The download runs where Snakemake runs (cluster nodes often have no internet).

localrules:
    download_cifar10,


rule download_cifar10:
    output:
        Path(config["datasets"]["cifar10"]["root"]) / "cifar-10-batches-py" / "test_batch",
    params:
        root=lambda wildcards, output: str(Path(output[0]).parents[1]),
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime("light"),
    log:
        f"{LOGS}/download_cifar10.log",
    benchmark:
        f"{OUT}/benchmarks/download_cifar10.tsv"
    conda:
        "../../envs/torch-cpu.yaml"
    script:
        "../scripts/download_cifar10.py"
