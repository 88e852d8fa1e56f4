# Training of every run (one job each) and the weight statistics of Fig 2.


rule train:
    input:
        dataset_files,
    output:
        final=f"{OUT}/train/{{run}}/final.pt",
        history=f"{OUT}/train/{{run}}/history.tsv",
    params:
        recipe=run_recipe,
        device=config["device"],
        compile=config["training"]["compile"],
        code=code_version("train"),
        run_dir=lambda w: f"{OUT}/train/{w.run}",
    threads: SCALE["threads"]
    resources:
        mem_mb=mem_mb("train"),
        runtime=runtime("train"),
        gpu=uses_gpu,
    log:
        f"{LOGS}/train/{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/train/{{run}}.tsv"
    conda:
        TORCH_ENV
    script:
        "../scripts/train.py"


rule weights:
    input:
        history=rules.train.output.history,
        final=rules.train.output.final,
    output:
        norms=f"{OUT}/weights/{{run}}/norms.tsv",
        histogram=f"{OUT}/weights/{{run}}/histogram.tsv",
    params:
        initial=lambda w: f"{OUT}/train/{w.run}/checkpoints/epoch-0000.pt",
        code=code_version("weights"),
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime("light"),
    log:
        f"{LOGS}/weights/{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/weights/{{run}}.tsv"
    conda:
        "../../envs/torch-cpu.yaml"
    script:
        "../scripts/weights.py"
