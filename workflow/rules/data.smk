# Datasets that must be fetched once before any training job (CIFAR-10; digits ship with scikit-learn).


rule download_cifar10:
    output:
        Path(config["datasets"]["cifar10"]["root"]) / "cifar-10-batches-py" / "test_batch",
    params:
        root=config["datasets"]["cifar10"]["root"],
    log:
        f"{LOGS}/download_cifar10.log",
    conda:
        "../../envs/torch-cpu.yaml"
    script:
        "../scripts/download_cifar10.py"
