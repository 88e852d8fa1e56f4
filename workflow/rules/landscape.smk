# The landscape engine: directions, random-direction surfaces (sharded), interpolations, sharpness.


rule directions:
    input:
        checkpoint=f"{OUT}/train/{{run}}/final.pt",
    output:
        f"{OUT}/directions/{{run}}/{{norm}}.h5",
    params:
        ignore_biasbn=config["landscape"]["ignore_biasbn"],
        seed=config["landscape"]["seed"],
        code=code_version("directions"),
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime("light"),
    log:
        f"{LOGS}/directions/{{run}}/{{norm}}.log",
    benchmark:
        f"{OUT}/benchmarks/directions/{{run}}/{{norm}}.tsv"
    conda:
        "../../envs/torch-cpu.yaml"
    script:
        "../scripts/directions.py"


rule surface_shard:
    input:
        checkpoint=f"{OUT}/train/{{run}}/final.pt",
        directions=plane_directions,
    output:
        f"{OUT}/surface/{{run}}/{{plane}}/shard-{{shard}}-of-{{n}}.h5",
    params:
        plane=lambda w: cfg.plane_settings(config, w.plane),
        grid=cfg.grid_settings(config),
        evaluation=cfg.evaluation_settings(config),
        device=config["device"],
        code=code_version("surface"),
    threads: SCALE["threads"]
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime("evaluate"),
        gpu=uses_gpu,
    log:
        f"{LOGS}/surface/{{run}}/{{plane}}/shard-{{shard}}-of-{{n}}.log",
    benchmark:
        f"{OUT}/benchmarks/surface/{{run}}/{{plane}}/shard-{{shard}}-of-{{n}}.tsv"
    conda:
        TORCH_ENV
    script:
        "../scripts/surface_shard.py"


# Merges the shards of a plane; a plane of one shard is computed by this job itself.
rule surface:
    input:
        shards=surface_shards,
        checkpoint=f"{OUT}/train/{{run}}/final.pt",
        directions=plane_directions,
    output:
        f"{OUT}/surface/{{run}}/{{plane}}.h5",
    params:
        plane=lambda w: cfg.plane_settings(config, w.plane),
        grid=cfg.grid_settings(config),
        evaluation=cfg.evaluation_settings(config),
        device=config["device"],
        code=code_version("surface"),
    threads: lambda w: 1 if surface_shards(w) else SCALE["threads"]
    resources:
        mem_mb=mem_mb(surface_family),
        runtime=runtime(surface_family),
        gpu=lambda w: 0 if surface_shards(w) else uses_gpu(w),
    log:
        f"{LOGS}/surface/{{run}}/{{plane}}.log",
    benchmark:
        f"{OUT}/benchmarks/surface/{{run}}/{{plane}}.tsv"
    conda:
        TORCH_ENV
    script:
        "../scripts/surface.py"


rule interpolate:
    input:
        a=lambda w: f"{OUT}/train/{config['landscape']['interpolations'][w.pair]['a']}/final.pt",
        b=lambda w: f"{OUT}/train/{config['landscape']['interpolations'][w.pair]['b']}/final.pt",
    output:
        f"{OUT}/interpolation/{{pair}}.h5",
    params:
        settings=cfg.interpolation_settings(config),
        evaluation=cfg.evaluation_settings(config),
        device=config["device"],
        code=code_version("surface"),
    threads: SCALE["threads"]
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime("evaluate"),
        gpu=uses_gpu,
    log:
        f"{LOGS}/interpolation/{{pair}}.log",
    benchmark:
        f"{OUT}/benchmarks/interpolation/{{pair}}.tsv"
    conda:
        TORCH_ENV
    script:
        "../scripts/interpolate.py"


rule sharpness:
    input:
        surfaces=all_surfaces,
        histories=expand(f"{OUT}/train/{{run}}/history.tsv", run=RUNS),
    output:
        f"{OUT}/sharpness.tsv",
    params:
        threshold=config["landscape"]["sharpness_threshold"],
        code=code_version("sharpness"),
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime("light"),
    log:
        f"{LOGS}/sharpness.log",
    benchmark:
        f"{OUT}/benchmarks/sharpness.tsv"
    conda:
        "../../envs/torch-cpu.yaml"
    script:
        "../scripts/sharpness.py"
