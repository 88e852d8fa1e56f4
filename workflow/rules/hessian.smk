# Hessian eigen-maps (Fig 7) over the plane of a run's surface, sharded like the surfaces.


rule hessian_shard:
    input:
        checkpoint=f"{OUT}/train/{{run}}/final.pt",
        directions=plane_directions,
    output:
        f"{OUT}/hessian/{{run}}/{{plane}}/shard-{{shard}}-of-{{n}}.h5",
    params:
        grid=cfg.grid_settings(config),
        hessian=cfg.hessian_settings(config),
        device=config["device"],
        code=code_version("hessian"),
    threads: SCALE["threads"]
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime("evaluate"),
        gpu=uses_gpu,
    log:
        f"{LOGS}/hessian/{{run}}/{{plane}}/shard-{{shard}}-of-{{n}}.log",
    benchmark:
        f"{OUT}/benchmarks/hessian/{{run}}/{{plane}}/shard-{{shard}}-of-{{n}}.tsv"
    conda:
        TORCH_ENV
    script:
        "../scripts/hessian_shard.py"


rule hessian:
    input:
        shards=lambda w: [
            f"{OUT}/hessian/{w.run}/{w.plane}/shard-{i}-of-{SCALE['landscape']['shards']}.h5"
            for i in range(SCALE["landscape"]["shards"])
        ],
        checkpoint=f"{OUT}/train/{{run}}/final.pt",
        directions=plane_directions,
    output:
        f"{OUT}/hessian/{{run}}/{{plane}}.h5",
    params:
        grid=cfg.grid_settings(config),
        hessian=cfg.hessian_settings(config),
        code=code_version("hessian"),
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime("light"),
    log:
        f"{LOGS}/hessian/{{run}}/{{plane}}.log",
    benchmark:
        f"{OUT}/benchmarks/hessian/{{run}}/{{plane}}.tsv"
    conda:
        "../../envs/torch-cpu.yaml"
    script:
        "../scripts/hessian.py"
